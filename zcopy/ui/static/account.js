// zcopy folder page: who is signed in, sign in / sign out, the CSRF header on every state-changing
// request the page makes, and "Share" per file or folder (a link with its QR code). Loaded before app.js.
// Where the server has no accounts (GET /.zcopy/me says login: null) it shows nothing.
"use strict";
(function () {
  var ME = "/.zcopy/me", SHARE = "/.zcopy/share", QR = "/.zcopy/qr";
  var csrf = null;
  var SAFE = { GET: 1, HEAD: 1, OPTIONS: 1, PROPFIND: 1 };

  function sameOrigin(url) {
    try { return new URL(url, location.href).origin === location.origin; } catch (e) { return false; }
  }

  // -- who is signed in: asked once; every state-changing request waits for the answer
  var ready = fetch(ME, { cache: "no-store", credentials: "same-origin" }).then(function (r) {
    return r.ok ? r.json() : null;
  }).catch(function () { return null; }).then(function (me) {
    if (me && me.csrf) csrf = me.csrf;
    return me;
  });

  // -- CSRF: the session's token on every same-origin request that may change something, whoever
  // makes it (app.js's uploads, renames, deletes; this file's share and sign-out)
  var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    this._zcopyNeeds = !SAFE[String(method).toUpperCase()] && sameOrigin(url);
    return open.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function () {
    var x = this, args = arguments;
    if (!x._zcopyNeeds) return send.apply(x, args);
    ready.then(function () {
      try {
        if (csrf) x.setRequestHeader("X-Zcopy-Csrf", csrf);
        send.apply(x, args);
      } catch (e) { /* aborted meanwhile: nothing to send */ }
    });
  };
  var nativeFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    init = init || {};
    var method = String(init.method || (input && input.method) || "GET").toUpperCase();
    var url = typeof input === "string" ? input : (input && input.url) || String(input);
    if (SAFE[method] || !sameOrigin(url)) return nativeFetch(input, init);
    return ready.then(function () {
      var headers = new Headers(init.headers || (input && input.headers) || {});
      if (csrf) headers.set("X-Zcopy-Csrf", csrf);
      return nativeFetch(input, Object.assign({}, init, { headers: headers }));
    });
  };

  function el(tag, props, kids) {
    var n = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "text") n.textContent = props[k]; else if (k in n) n[k] = props[k]; else n.setAttribute(k, props[k]);
    });
    (kids || []).forEach(function (c) { n.appendChild(c); });
    return n;
  }

  // -- the account line in the header: "Sign in", or the name and "Sign out"
  function accountLine(me) {
    var box = el("div", { id: "account", className: "account" });
    if (me.user === null) {
      var next = location.pathname + location.search;
      box.appendChild(el("a", { href: me.login + "?next=" + encodeURIComponent(next), id: "sign-in", text: "Sign in" }));
    } else {
      box.appendChild(el("span", { id: "signed-in", text: "Signed in as " }, [el("strong", { text: me.user })]));
      box.appendChild(document.createTextNode(" "));
      var out = el("button", { type: "button", id: "sign-out", text: "Sign out" });
      out.addEventListener("click", function () {
        fetch(me.logout, { method: "POST", credentials: "same-origin" }).then(function () { location.reload(); });
      });
      box.appendChild(out);
    }
    var header = document.querySelector("header") || document.body;
    header.insertBefore(box, header.firstChild);
  }

  // -- Share: per row (file or folder), a button; a dialog makes the link and shows it with its QR code
  var dialog = null;
  var asked = 0;     // the latest "Create link" (or opening): an older answer arriving late is dropped
  function shareDialog() {
    if (dialog) return dialog;
    var title = el("h2", { id: "share-title", text: "Share" });
    var expiry = el("select", { id: "share-expires" }, [
      el("option", { value: "3600", text: "1 hour" }), el("option", { value: "86400", text: "1 day", selected: true }),
      el("option", { value: "604800", text: "7 days" }), el("option", { value: "2592000", text: "30 days" })]);
    var make = el("button", { type: "button", id: "share-make", text: "Create link" });
    var link = el("input", { id: "share-link", type: "text", readOnly: true, "aria-label": "Share link" });
    var copy = el("button", { type: "button", id: "share-copy", text: "Copy" });
    var qr = el("img", { id: "share-qr", alt: "QR code of the share link", width: 200, height: 200 });
    var status = el("p", { id: "share-status", className: "share-status", role: "status" });
    var result = el("div", { id: "share-result", hidden: true }, [el("p", {}, [link, document.createTextNode(" "), copy]), qr]);
    var close = el("button", { type: "button", id: "share-close", text: "Close" });
    dialog = el("dialog", { id: "share-dialog", className: "share", "aria-labelledby": "share-title" }, [
      title, el("p", {}, [el("label", { htmlFor: "share-expires", text: "Link works for " }), expiry,
                          document.createTextNode(" "), make]), status, result, el("p", {}, [close])]);
    close.addEventListener("click", function () { dialog.close(); });
    copy.addEventListener("click", function () {
      link.select();
      if (navigator.clipboard) navigator.clipboard.writeText(link.value).catch(function () {});
      status.textContent = "Copied.";
    });
    make.addEventListener("click", function () {
      status.textContent = "Making the link\u2026";
      var mine = ++asked;
      var q = "?path=" + encodeURIComponent(dialog.dataset.path) + "&expires=" + expiry.value;
      fetch(SHARE + q, { method: "POST", credentials: "same-origin" }).then(function (r) {
        if (!r.ok) return r.text().then(function (t) { throw new Error(t.replace(/\s+/g, " ").trim()); });
        return r.json();
      }).then(function (doc) {
        if (mine !== asked) return;     // the dialog was reopened for another row (or asked again) meanwhile
        var url = location.origin + doc.url;
        link.value = url;
        qr.src = QR + "?text=" + encodeURIComponent(url);
        result.hidden = false;
        var what = /\/$/.test(doc.path) ? "open this folder and download what it holds" : "download the file";
        status.textContent = "Anyone with this link can " + what + " until " + new Date(doc.expires * 1000).toLocaleString() + ".";
        link.focus(); link.select();
      }).catch(function (err) { if (mine === asked) status.textContent = "Could not share: " + err.message; });
    });
    document.body.appendChild(dialog);
    return dialog;
  }
  function openShare(tr) {
    var a = tr.querySelector("td.name a"), path;
    try { path = decodeURIComponent(new URL(a.getAttribute("href"), location.href).pathname); } catch (e) { return; }
    var d = shareDialog();
    d.dataset.path = path;
    d.querySelector("#share-title").textContent = "Share " + tr.dataset.name;
    asked++;                            // a link still being made was for the row before
    d.querySelector("#share-result").hidden = true;
    d.querySelector("#share-link").value = "";      // never the last row's link, not even hidden
    d.querySelector("#share-qr").removeAttribute("src");
    d.querySelector("#share-status").textContent = "";
    d.showModal();
  }
  function addShare(tr) {
    if (tr.querySelector("button.share")) return;
    var cell = tr.querySelector("td.name");
    if (!cell) return;
    var b = el("button", { type: "button", className: "share", text: "Share", "aria-label": "Share " + tr.dataset.name });
    cell.appendChild(b);
  }
  function shareButtons() {
    var table = document.getElementById("listing");
    if (!table) return;
    // The rows are in <tbody> chunks (app.js), which app.js replaces when it re-sorts or re-reads
    // the folder: rows it adds later (after an upload) get theirs too.
    function all() { [].forEach.call(table.querySelectorAll(":scope > tbody > tr"), addShare); }
    all();
    table.addEventListener("click", function (ev) {      // one listener for every row's button
      var b = ev.target.closest("button.share");
      if (b) openShare(b.closest("tr"));
    });
    new MutationObserver(all).observe(table, { childList: true });
  }

  function start() {
    ready.then(function (me) {
      if (!me || !me.login) return;     // no accounts on this server: nobody signs in
      accountLine(me);
      if (me.user !== null) shareButtons();
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
