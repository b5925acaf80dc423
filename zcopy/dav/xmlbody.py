"""WebDAV request bodies: PROPFIND, PROPPATCH and LOCK, parsed with defusedxml.

Every XML body is parsed with defusedxml, so entity declarations (billion laughs), external entities
and DTDs are refused outright, and only after its size was bounded (``MAX_BODY``, enforced by the body
sink before parsing). A body that is not well-formed, or not the element RFC 4918 names, is an
``XmlError`` (the responder answers 400 and changes nothing).

Property names are ``(namespace, local name)`` pairs; the DAV: namespace is ``"DAV:"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, tostring

DAV = "DAV:"
MAX_BODY = 1 << 20            # 1 MiB: any real PROPFIND/PROPPATCH/LOCK body is far smaller
#: Element nesting allowed in a body (a property's value is serialized again by ElementTree, which
#: recurses once per level: a deeper body was a 500, RecursionError)
MAX_DEPTH = 100


class XmlError(ValueError):
    """A body that cannot be used: malformed, forbidden constructs, or the wrong element."""


def _parse(body: bytes) -> Element:
    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    if len(body) > MAX_BODY:
        raise XmlError(f"XML body larger than {MAX_BODY} bytes")
    try:
        root = DET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise XmlError(f"forbidden XML construct: {type(exc).__name__}") from None
    except Exception as exc:       # ParseError and friends: not well-formed
        raise XmlError(f"malformed XML: {exc}") from None
    level = [root]
    for _ in range(MAX_DEPTH):
        level = [child for el in level for child in el]
        if not level:
            return root
    raise XmlError(f"XML nested deeper than {MAX_DEPTH} elements")


def qname(el: Element) -> tuple[str, str]:
    tag = el.tag
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _is(el: Element, local: str) -> bool:
    return qname(el) == (DAV, local)


@dataclass
class PropFind:
    kind: str                                      # "allprop" | "propname" | "prop"
    names: list[tuple[str, str]] = field(default_factory=list)   # "prop": the asked names; "allprop": include


def propfind(body: bytes) -> PropFind:
    """An empty body means allprop (RFC 4918 9.1)."""
    if not body.strip():
        return PropFind("allprop")
    root = _parse(body)
    if not _is(root, "propfind"):
        raise XmlError("the body is not a DAV:propfind")
    kinds = [c for c in root if qname(c)[0] == DAV and qname(c)[1] in ("allprop", "propname", "prop")]
    if len(kinds) != 1:
        raise XmlError("DAV:propfind needs exactly one of allprop, propname, prop")
    kind = qname(kinds[0])[1]
    if kind == "prop":
        return PropFind("prop", [qname(p) for p in kinds[0]])
    include = [qname(p) for c in root if _is(c, "include") for p in c]
    return PropFind(kind, include if kind == "allprop" else [])


@dataclass
class PropChange:
    remove: bool
    name: tuple[str, str]
    value: bytes          # the property element serialized (kept verbatim, with its namespaces)


def proppatch(body: bytes) -> list[PropChange]:
    """The set/remove instructions in document order (RFC 4918 9.2: applied in order, all or none)."""
    root = _parse(body)
    if not _is(root, "propertyupdate"):
        raise XmlError("the body is not a DAV:propertyupdate")
    changes = []
    for op in root:
        if not (_is(op, "set") or _is(op, "remove")):
            continue
        for prop in op:
            if not _is(prop, "prop"):
                continue
            for p in prop:
                changes.append(PropChange(_is(op, "remove"), qname(p), b"" if _is(op, "remove") else
                                          tostring(p, encoding="utf-8", xml_declaration=False)))
    if not changes:
        raise XmlError("DAV:propertyupdate names no property")
    return changes


@dataclass
class LockInfo:
    exclusive: bool
    owner: bytes          # the DAV:owner element serialized, or b""


def lockinfo(body: bytes) -> LockInfo | None:
    """None for an empty body (a lock refresh, RFC 4918 9.10.2)."""
    if not body.strip():
        return None
    root = _parse(body)
    if not _is(root, "lockinfo"):
        raise XmlError("the body is not a DAV:lockinfo")
    scope = next((c for c in root if _is(c, "lockscope")), None)
    ltype = next((c for c in root if _is(c, "locktype")), None)
    if scope is None or ltype is None or len(scope) != 1 or len(ltype) != 1:
        raise XmlError("DAV:lockinfo needs a lockscope and a locktype")
    if not (_is(scope[0], "exclusive") or _is(scope[0], "shared")):
        raise XmlError("unknown lock scope")
    if not _is(ltype[0], "write"):
        raise XmlError("only write locks exist")
    owner = next((c for c in root if _is(c, "owner")), None)
    return LockInfo(_is(scope[0], "exclusive"),
                    b"" if owner is None else tostring(owner, encoding="utf-8", xml_declaration=False))
