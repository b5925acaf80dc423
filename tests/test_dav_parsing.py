"""WebDAV bodies and the If header, parsed: what RFC 4918's examples say, and hostile bodies refused."""

from __future__ import annotations

import pytest

from zcopy.dav import ifheader, xmlbody
from zcopy.dav.ifheader import Clause, Condition, IfHeaderError
from zcopy.dav.xmlbody import DAV, XmlError


def test_propfind_kinds():
    assert xmlbody.propfind(b"").kind == "allprop"
    named = xmlbody.propfind(b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/>'
                             b'<R:bigbox xmlns:R="http://ns.example.com/boxschema/"/></D:prop></D:propfind>')
    assert named.kind == "prop" and named.names == [(DAV, "getetag"), ("http://ns.example.com/boxschema/", "bigbox")]
    assert xmlbody.propfind(b'<propfind xmlns="DAV:"><propname/></propfind>').kind == "propname"
    inc = xmlbody.propfind(b'<D:propfind xmlns:D="DAV:"><D:allprop/><D:include><D:supported-live-property-set/>'
                           b'</D:include></D:propfind>')
    assert inc.kind == "allprop" and inc.names == [(DAV, "supported-live-property-set")]


@pytest.mark.parametrize("body", [
    b"<D:propfind xmlns:D='DAV:'><D:prop>",                                  # not well-formed
    b"<x/>",                                                                 # wrong element
    b"<D:propfind xmlns:D='DAV:'/>",                                         # none of the three
    b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><D:propfind xmlns:D="DAV:"><D:prop>&b;</D:prop></D:propfind>',
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><D:propfind xmlns:D="DAV:">&e;</D:propfind>',
    b"<D:propfind xmlns:D='DAV:'>" + b"<D:prop>" + b"<a/>" * 300000 + b"</D:prop></D:propfind>",   # > 1 MiB
])
def test_bad_bodies_are_refused(body):
    with pytest.raises(XmlError):
        xmlbody.propfind(body)


def test_proppatch_in_order_with_values_kept():
    changes = xmlbody.proppatch(
        b'<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
        b'xmlns:Z="http://ns.example.com/standards/z39.50/"><D:set><D:prop><Z:Authors><Z:Author>Jim</Z:Author>'
        b'</Z:Authors></D:prop></D:set><D:remove><D:prop><Z:Copyright-Owner/></D:prop></D:remove></D:propertyupdate>')
    assert [(c.remove, c.name) for c in changes] == [
        (False, ("http://ns.example.com/standards/z39.50/", "Authors")),
        (True, ("http://ns.example.com/standards/z39.50/", "Copyright-Owner"))]
    assert b"Jim" in changes[0].value


def test_lockinfo():
    info = xmlbody.lockinfo(b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                            b'<D:locktype><D:write/></D:locktype><D:owner><D:href>http://x/~ejw</D:href>'
                            b'</D:owner></D:lockinfo>')
    assert info.exclusive and b"~ejw" in info.owner
    assert xmlbody.lockinfo(b"") is None
    with pytest.raises(XmlError):
        xmlbody.lockinfo(b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                         b'<D:locktype><D:read/></D:locktype></D:lockinfo>')


@pytest.mark.parametrize("text, clauses", [
    ('(<urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2> ["I am an ETag"])',
     [Clause(None, ((Condition(False, token="urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2"),
                     Condition(False, etag='"I am an ETag"')),))]),
    ('(["I am an ETag"]) (["I am another ETag"])',
     [Clause(None, ((Condition(False, etag='"I am an ETag"'),), (Condition(False, etag='"I am another ETag"'),)))]),
    ('(Not <urn:uuid:181d4fae> <urn:uuid:58f202ac>)',
     [Clause(None, ((Condition(True, token="urn:uuid:181d4fae"), Condition(False, token="urn:uuid:58f202ac")),))]),
    ('<http://www.example.com/specs/> (<urn:uuid:181d4fae>) <http://x/y> ([W/"w"])',
     [Clause("http://www.example.com/specs/", ((Condition(False, token="urn:uuid:181d4fae"),),)),
      Clause("http://x/y", ((Condition(False, etag='W/"w"'),),))]),
    ('(<DAV:no-lock>)', [Clause(None, ((Condition(False, token="DAV:no-lock"),),))]),
])
def test_if_header_examples(text, clauses):
    assert ifheader.parse(text) == clauses


@pytest.mark.parametrize("text", ["", "(", "()", "(<a>", "<http://x>", "(<a>) <http://x> (<b>)",
                                  "(garbage)", "([noquotes])", "(< a b >)"])
def test_if_header_errors(text):
    with pytest.raises(IfHeaderError):
        ifheader.parse(text)


def test_submitted_tokens():
    assert ifheader.tokens(ifheader.parse('<http://h/a> (<a:1>) (Not <a:2>) <http://x> (<a:3> ["e"])')) == {"a:1", "a:3"}
