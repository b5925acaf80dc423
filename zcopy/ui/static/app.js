// zcopy folder page: sort and filter in place, and (where the server says body[data-write="1"])
// upload, make folder, rename and delete. No framework; the page works without this file.
"use strict";
(function () {
  var body = document.body, table = document.getElementById("listing");
  if (!table) return;
  // The rows live in <tbody> chunks of PER_BODY rows (the server's pieces, zcopy/http/listing.py): app.css
  // lets the browser skip laying out the chunks off screen. Whatever reorders or rebuilds the rows
  // lays them out again in chunks of the same size (layOut).
  var PER_BODY = +table.dataset.chunk || 256;
  function allRows() { return table.querySelectorAll(":scope > tbody > tr"); }
  function layOut(rows) {                  // rows in this order; new chunks, put in at once
    var frag = document.createDocumentFragment();
    [].slice.call(table.tBodies).forEach(function (tb) { table.removeChild(tb); });
    for (var i = 0; i < rows.length || i === 0; i += PER_BODY) {
      var tb = document.createElement("tbody"), end = Math.min(i + PER_BODY, rows.length);
      if (end - i === PER_BODY) tb.className = "c";
      for (var j = i; j < end; j++) tb.appendChild(rows[j]);
      frag.appendChild(tb);
    }
    table.appendChild(frag);
  }
  var writable = body.dataset.write === "1";
  var state = { sort: body.dataset.sort || "name", order: body.dataset.order || "asc" };
  var rowsMoved = function () {};          // the write controls' toolbar follows its row (below)

  // -- the one sort rule (zcopy/http/natural.py): folders first; names in pieces, digit runs as
  // numbers (shorter run first at equal value) before other runs, other runs lower-cased by code
  // point; ties by the name's code points.
  // A name not ASCII comes with the server's lower-cased text (fold): this browser's Unicode may be
  // another version than the server's, so it lower-cases nothing beyond ASCII itself.
  function pieces(name, fold) {
    var given = fold !== undefined, out = [], re = /([0-9]+)|([^0-9]+)/g, m;
    var text = given ? fold : name;
    while ((m = re.exec(text)) !== null) out.push(m[1] !== undefined ? { d: m[1] } : { s: given ? m[2] : m[2].toLowerCase() });
    return out;
  }
  function cmpCodePoints(a, b) {
    var ia = 0, ib = 0;
    while (ia < a.length && ib < b.length) {
      var x = a.codePointAt(ia), y = b.codePointAt(ib);
      if (x !== y) return x < y ? -1 : 1;
      ia += x > 0xffff ? 2 : 1; ib += y > 0xffff ? 2 : 1;
    }
    return ia < a.length ? 1 : (ib < b.length ? -1 : 0);
  }
  function cmpDigits(a, b) {
    var x = a.replace(/^0+/, ""), y = b.replace(/^0+/, "");
    if (x.length !== y.length) return x.length < y.length ? -1 : 1;
    if (x !== y) return x < y ? -1 : 1;
    return a.length === b.length ? 0 : (a.length < b.length ? -1 : 1);
  }
  function natural(a, p, b, q) {          // names a, b and their pieces p, q
    var n = Math.min(p.length, q.length);
    for (var i = 0; i < n; i++) {
      var x = p[i], y = q[i], c;
      if (x.d !== undefined && y.d !== undefined) c = cmpDigits(x.d, y.d);
      else if (x.d !== undefined) c = -1;
      else if (y.d !== undefined) c = 1;
      else c = cmpCodePoints(x.s, y.s);
      if (c) return c;
    }
    if (p.length !== q.length) return p.length < q.length ? -1 : 1;
    return cmpCodePoints(a, b);
  }
  function compare(col) {               // on {row, name, pieces, dir, size, mtime}, keys read once per row
    return function (a, b) {
      var c = 0;
      if (col === "size") c = a.size - b.size;
      else if (col === "mtime") c = a.mtime - b.mtime;
      return c ? (c < 0 ? -1 : 1) : natural(a.name, a.pieces, b.name, b.pieces);
    };
  }
  function sortRows() {
    var cmp = compare(state.sort), sign = state.order === "desc" ? -1 : 1;
    var items = [].map.call(allRows(), function (r) {
      var d = r.dataset;
      return { row: r, name: d.name, pieces: pieces(d.name, d.fold), dir: d.dir === "1", size: +d.size, mtime: +d.mtime };
    });
    items.sort(function (a, b) {
      if (a.dir !== b.dir) return a.dir ? -1 : 1;
      return sign * cmp(a, b);
    });
    // Rows move into new, detached chunks (no layout per move), which then go in in one step.
    layOut(items.map(function (it) { return it.row; }));
    rowsMoved();
    [].forEach.call(table.tHead.rows[0].cells, function (th) {
      var col = th.dataset.col, link = th.querySelector("a"), mark = th.querySelector(".mark");
      if (!col) return;
      var active = col === state.sort;
      if (active) th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      if (mark) mark.textContent = active ? (state.order === "asc" ? "\u25B2" : "\u25BC") : "";
      link.href = "?sort=" + col + "&order=" + (active && state.order === "asc" ? "desc" : "asc");
    });
  }
  table.tHead.addEventListener("click", function (ev) {
    var link = ev.target.closest("th a");
    if (!link || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    var col = link.parentNode.dataset.col;
    state.order = col === state.sort && state.order === "asc" ? "desc" : "asc";
    state.sort = col;
    sortRows();
    history.replaceState(null, "", "?sort=" + col + "&order=" + state.order);
  });

  // -- sizes and dates as the server writes them (zcopy/units.py format_size; UTC minutes)
  function humanSize(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) < 1024 || i === units.length - 1) return i === 0 ? Math.round(n) + " B" : n.toFixed(1) + " " + units[i];
      n /= 1024;
    }
  }
  function when(secs) {
    var d = new Date(secs * 1000), p = function (x) { return (x < 10 ? "0" : "") + x; };
    return d.getUTCFullYear() + "-" + p(d.getUTCMonth() + 1) + "-" + p(d.getUTCDate()) + " " +
      p(d.getUTCHours()) + ":" + p(d.getUTCMinutes());
  }

  // -- filter as you type
  var filter = document.getElementById("filter"), totalLine = document.getElementById("total-line");
  document.getElementById("filter-box").hidden = false;
  // -- search below this folder: Enter (or the button) in the find box asks the server
  // (FOLDER/?search=, zcopy/server/search.py) and shows what it found in place of the listing;
  // typing again, Escape or "Show the folder" goes back. Without script the form loads the
  // server's own result page.
  function searchBelow() {
    var form = document.getElementById("filter-box"), seq = 0;
    var box = document.createElement("section"), status = document.createElement("p");
    var back = document.createElement("button"), found = document.createElement("table");
    box.id = "found"; box.hidden = true; box.setAttribute("aria-label", "Search results");
    status.id = "search-status"; status.className = "total"; status.setAttribute("role", "status");
    back.type = "button"; back.id = "search-back"; back.textContent = "Show the folder";
    found.id = "results";
    var cap = found.createCaption(); cap.className = "sr"; cap.textContent = "Names found in this folder and below";
    var hr = found.createTHead().insertRow();
    [["Path", ""], ["Size", "n size"], ["Modified (UTC)", "mtime"]].forEach(function (c) {
      var h = document.createElement("th"); h.scope = "col"; h.textContent = c[0]; if (c[1]) h.className = c[1];
      hr.appendChild(h);
    });
    var rows = found.createTBody();
    var top = document.createElement("p"); top.className = "bar"; top.appendChild(status); top.appendChild(back);
    box.appendChild(top); box.appendChild(found);
    table.parentNode.insertBefore(box, table);
    function show(on) {
      box.hidden = !on; table.hidden = on; totalLine.hidden = on;
      var t = document.getElementById("tools"); if (t && writable) t.hidden = on;
    }
    function close() { seq++; show(false); }
    back.addEventListener("click", function () { close(); filter.focus(); });
    filter.addEventListener("input", function () { if (!box.hidden) close(); });
    filter.addEventListener("keydown", function (ev) { if (ev.key === "Escape" && !box.hidden) close(); });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var q = filter.value.trim(), mine = ++seq;
      if (!q) { close(); return; }
      status.textContent = "Searching\u2026"; rows.textContent = ""; show(true);
      fetch(here + "?search=" + encodeURIComponent(q), { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (r) {
          if (!r.ok) throw new Error("search failed: " + r.status + " " + r.statusText);
          return r.json();
        }).then(function (doc) {
          if (mine !== seq) return;                     // a newer search (or a close) won
          var frag = document.createDocumentFragment();
          doc.results.forEach(function (e) {
            var tr = document.createElement("tr"), a = document.createElement("a"), dir = e.type === "dir";
            a.href = e.href; a.textContent = e.path;
            var c = [tr.insertCell(), tr.insertCell(), tr.insertCell()];
            c[0].className = "name"; c[0].appendChild(a);
            c[1].className = "n"; c[1].textContent = dir ? "\u2014" : humanSize(e.size);
            c[2].textContent = when(e.mtime);
            frag.appendChild(tr);
          });
          if (!doc.results.length) { var tr = document.createElement("tr"), td = tr.insertCell(); td.colSpan = 3; td.textContent = "Nothing found."; frag.appendChild(tr); }
          rows.appendChild(frag);
          var n = doc.results.length, why = { results: "Stopped at the result limit: make the search narrower.",
            entries: "Stopped at the limit of entries searched: search a smaller folder.",
            time: "Stopped at the time limit: search a smaller folder." }[doc.stopped];
          status.textContent = n + " result" + (n === 1 ? "" : "s") + " for \u201c" + doc.search + "\u201d below this folder (" +
            doc.visited + " entries searched)" + (why ? ". " + why : "");
        }).catch(function (err) { if (mine === seq) status.textContent = String(err.message || err); });
    });
  }

  // -- previews: a click on a file's name (no modifier key) shows it in a dialog where the browser can:
  // images (<img>), audio and video (<audio>/<video>: the browser asks for ranges, so seeking works),
  // text (the first TEXT_BYTES by a Range request, shown as text: HTML, SVG source, scripts are never
  // rendered). Nothing is framed or rendered as a document, so a user's file keeps its sandbox CSP.
  // Other types, and any modified click, follow the link as before. Left/Right go through the files.
  function previews() {
    var KINDS = {}, TEXT_BYTES = 131072;
    function kinds(kind, exts) { exts.split(" ").forEach(function (e) { KINDS[e] = kind; }); }
    kinds("image", "png jpg jpeg jpe gif webp avif bmp ico svg apng");
    kinds("audio", "mp3 wav ogg oga opus flac m4a aac weba");
    kinds("video", "mp4 m4v webm ogv mov mkv");
    kinds("text", "txt text md markdown rst log csv tsv json jsonl ndjson xml yaml yml toml ini cfg conf env " +
      "properties py pyi js mjs cjs ts tsx jsx c h cc cpp hpp cxx rs go java kt kts scala rb pl pm php sh bash " +
      "zsh fish ps1 bat cmd css scss less html htm xhtml sql diff patch srt vtt tex bib mk cmake gradle lua r jl " +
      "hs ml elm ex exs erl clj cs fs swift dart proto graphql vue svelte nix tf hcl gitignore dockerfile");
    ["readme", "license", "copying", "makefile", "dockerfile", "changelog", "authors", "todo"].forEach(function (n) { KINDS["=" + n] = "text"; });
    function kindOf(name) {
      name = name.slice(name.lastIndexOf("/") + 1);
      var dot = name.lastIndexOf(".");
      return dot > 0 ? KINDS[name.slice(dot + 1).toLowerCase()] : KINDS["=" + name.toLowerCase()];
    }
    var dlg = document.createElement("dialog");
    dlg.id = "preview"; dlg.className = "preview"; dlg.setAttribute("aria-labelledby", "preview-title");
    dlg.innerHTML = '<div class="pv-head"><h2 id="preview-title"></h2><span class="pv-acts">' +
      '<a id="preview-open" class="button" href="">Open</a> <a id="preview-download" class="button" href="" download>Download</a> ' +
      '<button type="button" id="preview-close">Close</button></span></div><div id="preview-body" class="pv-body"></div>' +
      '<p class="pv-nav"><button type="button" id="preview-prev">\u2190 Previous</button> <span id="preview-count" class="total"></span> ' +
      '<button type="button" id="preview-next">Next \u2192</button></p>';
    document.body.appendChild(dlg);
    var pvBody = dlg.querySelector("#preview-body"), pvTitle = dlg.querySelector("#preview-title");
    var pvOpen = dlg.querySelector("#preview-open"), pvDown = dlg.querySelector("#preview-download");
    var pvCount = dlg.querySelector("#preview-count"), list = [], at = 0, seq = 0;
    function stop() {                    // a closed preview downloads nothing more
      seq++;
      [].forEach.call(pvBody.querySelectorAll("audio,video"), function (m) { m.pause(); m.removeAttribute("src"); m.load(); });
      pvBody.textContent = "";
    }
    function cannot(text) { var p = document.createElement("p"); p.className = "total"; p.textContent = text; pvBody.appendChild(p); }
    function show(i) {
      stop();
      at = i;
      var link = list[i], name = link.textContent, kind = kindOf(name), url = link.href, mine = seq;
      pvTitle.textContent = name; pvOpen.href = url; pvDown.href = url;
      pvCount.textContent = list.length > 1 ? (i + 1) + " of " + list.length : "";
      dlg.querySelector("#preview-prev").disabled = i === 0;
      dlg.querySelector("#preview-next").disabled = i === list.length - 1;
      var el;
      if (kind === "image") { el = document.createElement("img"); el.alt = name; }
      else if (kind === "audio" || kind === "video") {
        el = document.createElement(kind); el.controls = true; el.preload = "metadata";
      } else {
        el = document.createElement("pre"); el.className = "pv-text"; el.textContent = "Loading\u2026";
        fetch(url, { headers: { Range: "bytes=0-" + (TEXT_BYTES - 1) }, cache: "no-store" }).then(function (r) {
          if (r.status === 416) return { text: "", more: false };           // an empty file
          if (!r.ok) throw new Error(r.status + " " + r.statusText);
          var total = /\/(\d+)$/.exec(r.headers.get("Content-Range") || "");
          return r.arrayBuffer().then(function (buf) {
            return { text: new TextDecoder("utf-8").decode(buf), more: total && +total[1] > buf.byteLength, total: total && +total[1] };
          });
        }).then(function (got) {
          if (mine !== seq) return;
          el.textContent = got.text;
          if (got.more) cannot("The first " + humanSize(TEXT_BYTES) + " of " + humanSize(got.total) + " shown: Open shows all.");
          if (!got.text) cannot("(empty)");
        }).catch(function (err) { if (mine === seq) { el.textContent = ""; cannot("Cannot show it: " + err.message); } });
      }
      if (kind !== "text") {
        el.addEventListener("error", function () {
          if (mine !== seq) return;
          el.remove(); cannot("This browser cannot show this file: Open or Download it.");
        });
        el.src = url;
      }
      pvBody.appendChild(el);
    }
    dlg.querySelector("#preview-close").addEventListener("click", function () { dlg.close(); });
    dlg.querySelector("#preview-prev").addEventListener("click", function () { if (at > 0) show(at - 1); });
    dlg.querySelector("#preview-next").addEventListener("click", function () { if (at < list.length - 1) show(at + 1); });
    dlg.addEventListener("close", stop);
    dlg.addEventListener("keydown", function (ev) {
      if (ev.target.closest && ev.target.closest("audio,video")) return;   // their own arrow keys
      if (ev.key === "ArrowLeft" && at > 0) show(at - 1);
      else if (ev.key === "ArrowRight" && at < list.length - 1) show(at + 1);
    });
    document.addEventListener("click", function (ev) {
      if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.altKey || ev.defaultPrevented) return;
      var a = ev.target.closest("td.name a");
      if (!a || a.href.slice(-1) === "/" || !kindOf(a.textContent)) return;
      list = [].filter.call(a.closest("table").querySelectorAll("td.name a"), function (x) {
        return x.href.slice(-1) !== "/" && kindOf(x.textContent) && !x.closest("tr").hidden;
      });
      ev.preventDefault();
      if (!dlg.open) dlg.showModal();
      show(Math.max(0, list.indexOf(a)));
      dlg.querySelector("#preview-close").focus();
    });
  }

  function applyFilter() {
    var q = filter.value.toLowerCase(), shown = 0;
    // A chunk with hidden rows is always laid out ("part", app.css): off screen it would keep the
    // height of rows it no longer shows. A chunk showing all its rows again is made anew, so that it
    // has not remembered a filtered height either. Chunks whose rows all match stay skippable.
    [].slice.call(table.tBodies).forEach(function (tb) {
      var hidden = 0;
      [].forEach.call(tb.rows, function (r) {
        var hit = !q || r.dataset.name.toLowerCase().indexOf(q) >= 0;
        r.hidden = !hit;
        if (hit) shown++; else hidden++;
      });
      if (hidden) tb.classList.add("part");
      else if (tb.classList.contains("part")) {
        tb.classList.remove("part");
        var fresh = tb.cloneNode(false);
        while (tb.firstChild) fresh.appendChild(tb.firstChild);
        table.replaceChild(fresh, tb);
      }
    });
    rowsMoved();
    summarize(q ? shown : -1);
  }
  function summarize(shown) {
    var folders = 0, files = 0, bytes = 0;
    [].forEach.call(allRows(), function (r) {
      if (r.dataset.dir === "1") folders++; else { files++; bytes += +r.dataset.size; }
    });
    var s = folders + " folder" + (folders === 1 ? "" : "s") + ", " + files + " file" + (files === 1 ? "" : "s") +
      ", " + humanSize(bytes);
    totalLine.textContent = shown >= 0 ? shown + " of " + (folders + files) + " shown; " + s : s;
  }
  filter.addEventListener("input", applyFilter);
  var here = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  searchBelow();
  previews();

  if (!writable) return ready();

  // -- writes: everything below runs only for a visitor the server says may write
  function urlOf(rel) { return here + rel.split("/").map(encodeURIComponent).join("/"); }
  function request(method, url, headers) {
    return new Promise(function (resolve, reject) {
      var x = new XMLHttpRequest();
      x.open(method, url);
      Object.keys(headers || {}).forEach(function (k) { x.setRequestHeader(k, headers[k]); });
      x.onload = function () {
        var e = new Error(method + " " + x.status + " " + x.statusText); e.status = x.status;
        (x.status < 300 ? resolve : reject)(e);
      };
      x.onerror = function () { reject(new Error(method + " failed: network")); };
      x.send();
    });
  }
  function row(e) {
    var tr = document.createElement("tr"), dir = e.type === "dir";
    tr.dataset.name = e.name; if (e.fold !== undefined) tr.dataset.fold = e.fold; tr.dataset.dir = dir ? "1" : "0"; tr.dataset.size = e.size;
    tr.dataset.mtime = Math.round(e.mtime); tr.dataset.href = e.href;
    var a = document.createElement("a"); a.href = e.href; a.textContent = e.name + (dir ? "/" : "");
    var td = [document.createElement("td"), document.createElement("td"), document.createElement("td")];
    td[0].className = "name"; td[0].appendChild(a);
    td[1].className = "n"; td[1].textContent = dir ? "\u2014" : humanSize(e.size);
    td[2].textContent = when(e.mtime);
    td.forEach(function (c) { tr.appendChild(c); });
    return tr;
  }
  // -- row actions: one floating toolbar (Rename, Move, Delete) in the actions column of the row under
  // the pointer, tapped, or holding the focus. No buttons per row: a 10,000-row folder then costs what
  // a read-only one does (30,000 buttons took seconds of layout). Keyboard: Tab from a name goes into
  // its toolbar, Tab from the toolbar's last button to the next name, Shift+Tab back the same way.
  table.classList.add("writable");          // room on its right for the toolbar (app.css)
  var bar = document.createElement("div"), current = null;
  bar.id = "row-tools"; bar.className = "row-tools"; bar.setAttribute("role", "group"); bar.hidden = true;
  var acts = [["Rename", "ren"], ["Move", "mov"], ["Delete", "del"]].map(function (b) {
    var el = document.createElement("button"); el.type = "button"; el.textContent = b[0]; el.className = b[1];
    bar.appendChild(el);
    return el;
  });
  table.parentNode.insertBefore(bar, table.nextSibling);
  function nameLink(tr) { return tr.cells[0].firstChild; }
  function place(tr) {
    if (!tr || !isRow(tr) || tr.hidden) { bar.hidden = true; current = null; return; }
    current = tr;
    tr.dataset.href = tr.dataset.href || nameLink(tr).getAttribute("href");
    var name = tr.dataset.name;
    bar.setAttribute("aria-label", "Actions for " + name);
    acts.forEach(function (b) { b.setAttribute("aria-label", b.textContent + " " + name); });
    bar.hidden = false;
    var r = tr.getBoundingClientRect(), m = bar.offsetParent.getBoundingClientRect();
    bar.style.top = (r.top - m.top + (r.height - bar.offsetHeight) / 2) + "px";
    bar.style.left = "auto"; bar.style.right = "0";
  }
  function replace() { place(current); }
  function isRow(tr) { return tr.parentNode && tr.parentNode.parentNode === table && tr.parentNode.tagName === "TBODY"; }
  function rowOf(el) { var tr = el.closest && el.closest("tr"); return tr && isRow(tr) ? tr : null; }
  function sibling(tr, way) {              // the next or previous row ("next"/"previous"), across chunks
    var s = tr[way + "ElementSibling"], tb = tr.parentNode;
    while (!s && (tb = tb[way + "ElementSibling"]) && tb.tagName === "TBODY")
      s = way === "next" ? tb.firstElementChild : tb.lastElementChild;
    return s;
  }
  function shown(tr, way) { do { tr = sibling(tr, way); } while (tr && tr.hidden); return tr; }
  // One listener each on the table for all rows (delegation), none per row.
  table.addEventListener("mouseover", function (ev) {
    var tr = rowOf(ev.target);
    if (tr && tr !== current && !bar.contains(document.activeElement)) place(tr);
  });
  table.addEventListener("focusin", function (ev) { var tr = rowOf(ev.target); if (tr) place(tr); });
  table.addEventListener("click", function (ev) {
    if (!ev.target.closest("a") && ev.target.closest("tbody")) place(rowOf(ev.target));
  });
  // The name cell's controls: its link, and whatever else is there (account.js's Share button).
  function cellControls(tr) { return tr.cells[0].querySelectorAll("a[href], button"); }
  table.addEventListener("keydown", function (ev) {
    var cell = ev.key === "Tab" && ev.target.closest("td.name");
    if (!cell) return;
    var tr = rowOf(ev.target), own = cellControls(tr);
    if (!ev.shiftKey && ev.target === own[own.length - 1]) { place(tr); ev.preventDefault(); acts[0].focus(); }
    else if (ev.shiftKey && ev.target === own[0]) {
      var prev = shown(tr, "previous");
      if (prev) { place(prev); ev.preventDefault(); acts[2].focus(); }
    }
  });
  bar.addEventListener("keydown", function (ev) {
    if (ev.key !== "Tab" || !current) return;
    var next = !ev.shiftKey && ev.target === acts[2] && shown(current, "next");
    if (ev.shiftKey && ev.target === acts[0]) {
      var own = cellControls(current); ev.preventDefault(); own[own.length - 1].focus();
    } else if (next) { ev.preventDefault(); nameLink(next).focus(); }
  });
  window.addEventListener("resize", replace);
  rowsMoved = replace;
  function refresh() {
    return fetch(here, { headers: { Accept: "application/json" }, cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("listing " + r.status);
      return r.json();
    }).then(function (doc) {
      place(null);
      layOut(doc.entries.map(row));            // one insertion; sortRows puts them in order
      sortRows(); applyFilter();
    }).catch(function (err) {                  // the listing stays as it was; say so
      totalLine.textContent = "The listing could not be re-read (" + (err.message || err) + "): reload the page.";
    });
  }
  bar.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button"); if (!btn || !current) return;
    var tr = current, name = tr.dataset.name, dir = tr.dataset.dir === "1";
    if (btn.classList.contains("del")) {
      if (!confirm("Delete " + (dir ? "the folder " + name + " and everything in it" : name) + "?")) return;
      request("DELETE", here + tr.dataset.href + (dir ? "?recursive=1" : "")).then(refresh, alertError);
    } else if (btn.classList.contains("ren")) {
      var to = prompt("New name for " + name, name);
      if (!to || to === name) return;
      if (to.indexOf("/") >= 0) { alert("A name cannot contain /"); return; }
      moveTo(here + tr.dataset.href, urlOf(to) + (dir ? "/" : ""), to, "this folder").then(refresh, alertError);
    } else if (btn.classList.contains("mov")) {
      mover.open(tr);
    }
  });
  // MOVE that never replaces unasked: Overwrite F first; when something is there by that name (412),
  // ask, then Overwrite T.
  function moveTo(from, toUrl, name, where) {
    var dest = { Destination: location.origin + toUrl, Overwrite: "F" };
    return request("MOVE", from, dest).catch(function (err) {
      if (err.status !== 412) throw err;
      if (!confirm(name + " already exists in " + where + ". Replace it?")) return;
      dest.Overwrite = "T";
      return request("MOVE", from, dest);
    });
  }
  var mover = moveDialog();
  function alertError(err) { alert(String(err.message || err)); }

  // -- move to another folder: a dialog with a path field and a folder picker (the folders of the
  // field's folder, read from the JSON listing; Up goes to the parent). "Move here" sends MOVE.
  function moveDialog() {
    var dlg = document.createElement("dialog"), form = document.createElement("form");
    dlg.id = "move-dialog"; dlg.setAttribute("aria-labelledby", "move-title");
    form.method = "dialog";
    form.innerHTML = '<h2 id="move-title"></h2><p><label for="move-to">To folder</label> ' +
      '<input id="move-to" type="text" autocomplete="off" spellcheck="false"></p>' +
      '<p class="total" id="move-where"></p><ul id="move-list" class="picker"></ul>' +
      '<p id="move-error" class="error" role="alert"></p>' +
      '<p class="buttons"><button type="submit" id="move-ok">Move here</button> ' +
      '<button type="button" id="move-cancel">Cancel</button></p>';
    dlg.appendChild(form); document.body.appendChild(dlg);
    var field = form.querySelector("#move-to"), list = form.querySelector("#move-list");
    var where = form.querySelector("#move-where"), error = form.querySelector("#move-error");
    var title = form.querySelector("#move-title"), row = null, shownUrl = "/", seq = 0;
    function decode(url) { try { return decodeURIComponent(url); } catch (e) { return url; } }
    function encode(path) {       // a typed path -> URL path of a folder (each name encoded; ends with /)
      var names = path.split("/").filter(function (n) { return n && n !== "."; }), out = [];
      names.forEach(function (n) { if (n === "..") out.pop(); else out.push(encodeURIComponent(n)); });
      return "/" + out.map(function (n) { return n + "/"; }).join("");
    }
    function target() { return decode(shownUrl) === field.value ? shownUrl : encode(field.value); }
    function button(text, url, label) {
      var li = document.createElement("li"), b = document.createElement("button");
      b.type = "button"; b.textContent = text; b.dataset.url = url;
      if (label) b.setAttribute("aria-label", label);
      li.appendChild(b); list.appendChild(li);
      return b;
    }
    function show(url) {          // the picker lists the folders of ``url``
      var mine = ++seq; shownUrl = url; field.value = decode(url); error.textContent = "";
      where.textContent = "Folders in " + decode(url) + ":"; list.textContent = "";
      if (url !== "/") button("\u2191 Up", url.replace(/[^/]*\/$/, ""), "Up to the parent folder");
      fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" }).then(function (r) {
        if (!r.ok) throw new Error("cannot list " + decode(url) + ": " + r.status + " " + r.statusText);
        return r.json();
      }).then(function (doc) {
        if (mine !== seq) return;
        var self = row && row.dataset.dir === "1" ? here + row.dataset.href : null;
        var dirs = doc.entries.filter(function (e) { return e.type === "dir"; });
        dirs.forEach(function (e) {
          var b = button(e.name + "/", url + e.href, "Folder " + e.name);
          if (url + e.href === self) { b.disabled = true; b.title = "the folder being moved"; }
        });
        if (!dirs.length) { var li = document.createElement("li"); li.className = "total"; li.textContent = "(no folders)"; list.appendChild(li); }
      }).catch(function (err) { if (mine === seq) error.textContent = String(err.message || err); });
    }
    list.addEventListener("click", function (ev) {
      var b = ev.target.closest("button"); if (b) { show(b.dataset.url); field.focus(); }
    });
    field.addEventListener("keydown", function (ev) {     // Tab-free browsing: Enter on a typed folder moves
      if (ev.key === "ArrowDown") { var b = list.querySelector("button:not([disabled])"); if (b) { ev.preventDefault(); b.focus(); } }
    });
    form.querySelector("#move-cancel").addEventListener("click", function () { dlg.close(); });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var to = target(), dir = row.dataset.dir === "1", name = row.dataset.name;
      if (to === here) { error.textContent = name + " is in this folder already."; return; }
      var ok = form.querySelector("#move-ok"); ok.disabled = true;
      moveTo(here + row.dataset.href, to + row.dataset.href, name, decode(to)).then(function () {
        dlg.close(); return refresh();
      }, function (err) { error.textContent = String(err.message || err); }).then(function () { ok.disabled = false; });
    });
    return {
      open: function (tr) {
        row = tr; title.textContent = "Move " + tr.dataset.name + (tr.dataset.dir === "1" ? "/" : "");
        dlg.showModal(); show(here); field.focus(); field.select();
      }
    };
  }
  document.getElementById("mkdir").addEventListener("click", function () {
    var name = prompt("Name of the new folder");
    if (!name) return;
    if (name.indexOf("/") >= 0) { alert("A name cannot contain /"); return; }
    request("MKCOL", urlOf(name) + "/").then(refresh, alertError);
  });

  // -- uploads: one XHR PUT per file (progress, cancel, retry), folders first made with MKCOL
  var tools = document.getElementById("tools"), panel = document.getElementById("progress");
  var queueList = document.getElementById("queue"), totalBar = document.getElementById("total");
  var totalText = document.getElementById("total-text");
  tools.hidden = false;
  var jobs = [], running = 0, LIMIT = 3, madeDirs = {};
  function updateTotal() {
    var size = 0, done = 0, finished = 0;
    jobs.forEach(function (j) { if (j.state === "cancelled") return; size += j.file.size; done += j.loaded; if (j.state === "done") finished++; });
    var live = jobs.filter(function (j) { return j.state !== "cancelled"; }).length;
    totalBar.max = size || 1; totalBar.value = size ? done : (finished === live ? 1 : 0);
    totalText.textContent = finished + " of " + live + " files, " + humanSize(done) + " of " + humanSize(size);
  }
  function setState(j, s, text) {
    j.state = s; j.li.className = s; j.status.textContent = text;
    j.cancel.hidden = !(s === "queued" || s === "sending");
    j.retry.hidden = !(s === "failed" || s === "cancelled");
    updateTotal();
  }
  function ensureDirs(rel) {
    var parts = rel.split("/").slice(0, -1), chain = Promise.resolve(), path = "";
    parts.forEach(function (p) {
      path += (path ? "/" : "") + p;
      var at = path;
      chain = chain.then(function () {
        if (!madeDirs[at]) madeDirs[at] = request("MKCOL", urlOf(at) + "/").catch(function (e) {
          if (!/ 405 /.test(e.message)) { delete madeDirs[at]; throw e; }     // 405: it exists already
        });
        return madeDirs[at];
      });
    });
    return chain;
  }
  function pump() {
    while (running < LIMIT) {
      var j = jobs.find(function (x) { return x.state === "queued"; });
      if (!j) break;
      start(j);
    }
    if (!running && jobs.length && jobs.every(function (x) { return x.state !== "queued" && x.state !== "sending"; })) refresh();
  }
  function start(j) {
    running++;
    setState(j, "sending", "sending");
    ensureDirs(j.rel).then(function () {
      if (j.state !== "sending") return;
      if (j.file.size >= RESUMABLE_FROM) return tusOffered().then(function (yes) {
        if (j.state !== "sending") return;
        if (yes) return resumable(j);
        put(j);
      });
      put(j);
    }, function (err) { running--; setState(j, "failed", "failed: " + err.message); pump(); });
  }
  function put(j) {                               // one plain PUT of the whole file
    {
      var x = j.xhr = new XMLHttpRequest();
      x.open("PUT", urlOf(j.rel));
      x.upload.onprogress = function (ev) { j.loaded = ev.loaded; j.bar.value = ev.loaded; updateTotal(); };
      x.onload = function () {
        running--;
        if (x.status < 300) { j.loaded = j.file.size; j.bar.value = j.file.size || 1; setState(j, "done", "done"); }
        else setState(j, "failed", "failed: " + x.status + " " + x.statusText);
        pump();
      };
      x.onerror = function () { running--; setState(j, "failed", "failed: network"); pump(); };
      x.onabort = function () { running--; pump(); };
      x.send(j.file);
    }
  }

  // -- resumable uploads (tus 1.0.0, zcopy/server/uploads.py; docs/uploads.md): files of RESUMABLE_FROM
  // bytes or more, when the server says it speaks tus (OPTIONS: Tus-Version), else a plain PUT.
  // POST to the file's folder with Upload-Length and Upload-Metadata "filename <base64>", then PATCH
  // the Location with Upload-Offset, CHUNK bytes at a time. A failed PATCH (the network dropped, the
  // laptop slept, the server restarted) is retried with backoff: HEAD gives the offset the server
  // holds, and the next PATCH goes on from there. Cancel aborts and DELETEs the upload. The Location
  // is remembered (localStorage, per target, size and date of the file), so the same file chosen
  // again after a reload goes on where it stopped.
  var RESUMABLE_FROM = 4 << 20, CHUNK = 64 << 20, TUS = { "Tus-Resumable": "1.0.0" };
  var BACKOFF = [500, 1000, 2000, 4000, 8000, 15000, 30000], offered = null;
  function tusOffered() {
    if (!offered) offered = new Promise(function (resolve) {
      var x = new XMLHttpRequest();
      x.open("OPTIONS", here);
      x.setRequestHeader("Tus-Resumable", "1.0.0");
      x.onload = function () { resolve(/(^|,)\s*1\.0\.0\s*(,|$)/.test(x.getResponseHeader("Tus-Version") || "")); };
      x.onerror = function () { offered = null; resolve(false); };
      x.send();
    });
    return offered;
  }
  function tusCall(method, url, headers, body, onprogress, job) {
    return new Promise(function (resolve, reject) {
      var x = new XMLHttpRequest(), all = Object.assign({}, TUS, headers || {});
      x.open(method, url);
      Object.keys(all).forEach(function (k) { x.setRequestHeader(k, all[k]); });
      if (onprogress) x.upload.onprogress = onprogress;
      x.onload = function () { resolve(x); };
      x.onerror = x.ontimeout = function () { var e = new Error("network"); e.status = 0; reject(e); };
      x.onabort = function () { var e = new Error("aborted"); e.aborted = true; reject(e); };
      x.send(body || null);
      if (job) job.patch = x;
    });
  }
  function b64(text) {
    var bytes = new TextEncoder().encode(text), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin);
  }
  function storeKey(j) { return "zcopy-tus " + urlOf(j.rel) + " " + j.file.size + " " + j.file.lastModified; }
  function remember(j, url) { try { if (url) localStorage.setItem(storeKey(j), url); else localStorage.removeItem(storeKey(j)); } catch (e) { /* private mode */ } }
  function recalled(j) { try { return localStorage.getItem(storeKey(j)); } catch (e) { return null; } }
  function fail(j, why) { if (j.state !== "sending") return; running--; setState(j, "failed", "failed: " + why); pump(); }
  function resumable(j) {
    var size = j.file.size, tries = 0;
    j.resumable = true;
    function progress(at) { j.loaded = at; j.bar.value = at; updateTotal(); }
    function create() {
      var rel = j.rel.split("/"), name = rel.pop(), folder = urlOf(rel.join("/")).replace(/\/?$/, "/");
      return tusCall("POST", folder, { "Upload-Length": String(size), "Upload-Metadata": "filename " + b64(name) })
        .then(function (x) {
          if (x.status !== 201 || !x.getResponseHeader("Location")) throw httpError("POST", x);
          j.tus = new URL(x.getResponseHeader("Location"), location.href).href;
          remember(j, j.tus);
          return 0;
        });
    }
    function offset() {                              // where the server's copy ends (or a new upload)
      if (!j.tus) { j.tus = recalled(j); if (!j.tus) return create(); }
      return tusCall("HEAD", j.tus).then(function (x) {
        if (x.status === 404 || x.status === 410 || x.status === 403) { j.tus = null; remember(j, null); return create(); }
        if (x.status >= 300) throw httpError("HEAD", x);
        return +x.getResponseHeader("Upload-Offset");
      });
    }
    function send(at) {
      progress(at);
      if (j.state !== "sending") return;
      if (at >= size) return done();
      var end = Math.min(size, at + CHUNK);
      return tusCall("PATCH", j.tus, { "Upload-Offset": String(at), "Content-Type": "application/offset+octet-stream" },
        j.file.slice(at, end), function (ev) { progress(at + ev.loaded); }, j).then(function (x) {
          if (j.state !== "sending") return;
          if (x.status === 409) return offset().then(send);          // the server holds another offset
          if (x.status !== 204) throw httpError("PATCH", x);
          tries = 0;
          return send(+x.getResponseHeader("Upload-Offset"));
        });
    }
    function done() { if (j.state !== "sending") return; running--; remember(j, null); j.loaded = size; j.bar.value = size || 1; setState(j, "done", "done"); pump(); }
    function attempt() {
      if (j.state !== "sending") return;
      j.patch = null;
      offset().then(function (at) {
        if (at > 0 && !tries) setState(j, "sending", "resuming at " + Math.round(100 * at / size) + "%");
        else if (tries) setState(j, "sending", "sending");
        return send(at);
      }).catch(function (err) {
        if (err.aborted || j.state !== "sending") return;        // cancelled: see the Cancel button
        var wait = BACKOFF[Math.min(tries, BACKOFF.length - 1)];
        var retriable = !err.status || err.status >= 500 || err.status === 409 || err.status === 423 || err.status === 429;
        if (!retriable || tries >= 12) return fail(j, err.message);
        tries++;
        setState(j, "sending", "connection lost; retrying in " + Math.round(wait / 1000 * 10) / 10 + " s");
        setTimeout(function () {
          if (navigator.onLine === false) window.addEventListener("online", attempt, { once: true });
          else attempt();
        }, wait);
      });
    }
    attempt();
  }
  function httpError(method, x) {
    var e = new Error(method + " " + x.status + " " + x.statusText); e.status = x.status; return e;
  }
  function enqueue(file, rel) {
    var li = document.createElement("li"), j = { file: file, rel: rel, loaded: 0, li: li };
    var f = document.createElement("span"); f.className = "f"; f.textContent = rel;
    j.bar = document.createElement("progress"); j.bar.max = file.size || 1; j.bar.value = 0;
    j.bar.setAttribute("aria-label", "Progress of " + rel);
    j.status = document.createElement("span"); j.status.className = "s";
    j.cancel = document.createElement("button"); j.cancel.type = "button"; j.cancel.textContent = "Cancel";
    j.cancel.setAttribute("aria-label", "Cancel " + rel);
    j.retry = document.createElement("button"); j.retry.type = "button"; j.retry.textContent = "Retry";
    j.retry.setAttribute("aria-label", "Retry " + rel);
    j.cancel.onclick = function () {
      var was = j.state; setState(j, "cancelled", "cancelled");
      if (was === "sending" && j.resumable) {     // the upload resource goes too; nothing is kept
        running--;
        if (j.patch) j.patch.abort();
        if (j.tus) tusCall("DELETE", j.tus).catch(function () {});
        remember(j, null); j.tus = null; j.xhr = null;
        pump();
      } else if (was === "sending" && j.xhr) j.xhr.abort();
    };
    j.retry.onclick = function () {
      madeDirs = {};                          // folders are made again: the failure may have been one of them
      j.loaded = 0; j.bar.value = 0; setState(j, "queued", "queued"); pump();
    };
    [f, j.bar, j.status, j.cancel, j.retry].forEach(function (n) { li.appendChild(n); });
    queueList.appendChild(li);
    jobs.push(j);
    setState(j, "queued", "queued");
  }
  function addFiles(list) {
    panel.hidden = false;
    [].forEach.call(list, function (f) { enqueue(f, f.webkitRelativePath || f.relativePath || f.name); });
    pump();
  }
  ["pick-files", "pick-folder"].forEach(function (id) {
    var input = document.getElementById(id);
    input.addEventListener("change", function () { addFiles(input.files); input.value = ""; });
  });
  // Drag and drop: files, and folders through webkitGetAsEntry (structure kept).
  function readEntry(entry, prefix, out) {
    if (entry.isFile) return new Promise(function (res) {
      entry.file(function (f) { out.push({ file: f, rel: prefix + f.name }); res(); }, function () { res(); });
    });
    var reader = entry.createReader(), all = [];
    return new Promise(function (res) {
      (function more() {
        reader.readEntries(function (batch) {
          if (!batch.length) {
            if (!all.length) out.push({ dir: true, rel: prefix + entry.name + "/" });   // an empty folder comes too
            Promise.all(all.map(function (e) { return readEntry(e, prefix + entry.name + "/", out); })).then(res);
            return;
          }
          all = all.concat([].slice.call(batch)); more();
        }, function () { res(); });
      })();
    });
  }
  var drop = document.getElementById("drop");
  ["dragenter", "dragover"].forEach(function (t) {
    document.addEventListener(t, function (ev) { ev.preventDefault(); drop.classList.add("over"); });
  });
  document.addEventListener("dragleave", function (ev) { if (!ev.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", function (ev) {
    ev.preventDefault(); drop.classList.remove("over");
    var items = ev.dataTransfer.items, entries = [];
    if (items && items.length && items[0].webkitGetAsEntry) {
      [].forEach.call(items, function (it) { var e = it.webkitGetAsEntry(); if (e) entries.push(e); });
      var out = [];
      Promise.all(entries.map(function (e) { return readEntry(e, "", out); })).then(function () {
        var files = out.filter(function (o) { return !o.dir; });
        // Empty folders are made as they are (MKCOL, parents first); the others come with their files.
        Promise.all(out.filter(function (o) { return o.dir; }).map(function (o) { return ensureDirs(o.rel); }))
          .then(function () { if (!files.length) refresh(); }, alertError);
        if (!files.length) return;
        panel.hidden = false;
        files.forEach(function (o) { enqueue(o.file, o.rel); });
        pump();
      });
    } else addFiles(ev.dataTransfer.files);
  });
  ready();
  function ready() { performance.mark("zcopy-ready"); document.documentElement.dataset.ready = "1"; }
})();
