// The console's only script: operator actions (same-origin fetch, the cookie rides along) and the
// live board over Server-Sent Events. No framework, no build step.
"use strict";
const console_ = (() => {
  function toast(text, bad) {
    const t = document.getElementById("toast");
    if (!t) return;
    t.textContent = text; t.className = bad ? "bad" : "good"; t.hidden = false;
    clearTimeout(t._timer); t._timer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  // POST JSON to a console action; resolves to {ok, status, body}. A refusal's problem detail is shown.
  async function post(url, body) {
    let r;
    try {
      r = await fetch(url, {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: JSON.stringify(body || {})});
    } catch (e) { toast("the gateway did not answer: " + e, true); return {ok: false, status: 0, body: null}; }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) toast((data && data.detail) || (r.status + " " + r.statusText), true);
    return {ok: r.ok, status: r.status, body: data};
  }

  function age(seconds) {
    if (seconds == null) return "never";
    const s = Math.max(0, Math.floor(seconds));
    if (s >= 86400) return Math.floor(s / 86400) + " d";
    if (s >= 3600) return Math.floor(s / 3600) + " h";
    if (s >= 60) return Math.floor(s / 60) + " min";
    return s + " s";
  }

  // -- live rows ---------------------------------------------------------------------------
  const FIELDS = ["name", "state", "order", "operation", "today", "rate", "pending", "counted", "anomalies",
                  "source", "health", "confirmed", "held"];
  let staleAfter = 300;

  function fieldsOf(el) {
    if (!el._f) { el._f = {}; el.querySelectorAll("[data-f]").forEach(x => { el._f[x.dataset.f] = x; }); }
    return el._f;
  }

  function show(el, row) {
    const f = fieldsOf(el);
    for (const k of FIELDS) {
      if (!f[k]) continue;
      let v = row[k];
      if (k === "order" && !v) v = "—";
      if (k === "today" && v == null) v = "…";
      const text = v == null ? "" : String(v);
      if (f[k].textContent !== text) f[k].textContent = text;
    }
    if (f.name && f.name.tagName === "A") f.name.href = "/console/machines/" + encodeURIComponent(row.name);
    if (f.health) f.health.title = row.health_detail || "";
    if (f.anomalies) f.anomalies.classList.toggle("warn", row.anomalies > 0);
    el.dataset.lastAt = row.last_at == null ? "" : row.last_at;
    el.dataset.health = row.health;
    el.dataset.machine = row.name; el.dataset.line = row.work_center; el.dataset.source = row.source;
    el.className = el.className.replace(/\bstate-\S+/g, "").trim() + " state-" + row.state;
    el.querySelectorAll("[data-counter]").forEach(tr => {
      const c = (row.counters || {})[tr.dataset.counter];
      if (!c) return;
      tr.querySelector(".raw").textContent = c.raw;
      tr.querySelector(".quality").textContent = c.quality || "";
    });
    ages(el);
  }

  function ages(el) {
    const at = el.dataset.lastAt, f = fieldsOf(el);
    const seconds = at === "" || at == null ? null : Date.now() / 1000 - Number(at);
    const text = age(seconds);
    if (f.age && f.age.textContent !== text) f.age.textContent = text;
    const silent = seconds == null || seconds > staleAfter || (el.dataset.health && el.dataset.health !== "connected");
    if (el.classList.contains("silent") !== silent) el.classList.toggle("silent", silent);
  }

  function live(container, url, makeTile) {
    const byName = new Map();
    container.querySelectorAll("[data-machine]").forEach(el => byName.set(el.dataset.machine, el));
    const status = document.getElementById("live");
    const es = new EventSource(url);
    es.addEventListener("open", () => { if (status) { status.textContent = "live"; status.className = "live on"; } });
    es.addEventListener("error", () => { if (status) { status.textContent = "reconnecting…"; status.className = "live off"; } });
    es.addEventListener("config", e => { staleAfter = JSON.parse(e.data).stale_after_s; });
    es.addEventListener("rows", e => {
      const u = JSON.parse(e.data);
      if (u.snapshot && makeTile) {
        const names = new Set(u.rows.map(r => r.name));
        for (const [name, el] of byName) if (!names.has(name)) { el.remove(); byName.delete(name); }
      }
      for (const row of u.rows) {
        let el = byName.get(row.name);
        if (!el && makeTile) { el = makeTile(row); byName.set(row.name, el); }
        if (el) show(el, row);
      }
      for (const name of u.removed || []) {
        const el = byName.get(name);
        if (el && makeTile) { el.remove(); byName.delete(name); }
      }
      if (makeTile) filter();
      container.dataset.updates = String(Number(container.dataset.updates || 0) + 1);
    });
    setInterval(() => byName.forEach(ages), 1000);
    return es;
  }

  // -- the board's filter (line / source), kept in the URL --------------------------------
  function filter() {
    const line = document.getElementById("f-line"), source = document.getElementById("f-source");
    if (!line) return;
    document.querySelectorAll("#board [data-machine]").forEach(el => {
      el.hidden = (line.value && el.dataset.line !== line.value) || (source.value && el.dataset.source !== source.value);
    });
  }

  function boardPage() {
    const board = document.getElementById("board");
    if (!board) return;
    staleAfter = Number(board.dataset.staleAfter || 300);
    const tpl = document.getElementById("tile-template");
    live(board, board.dataset.stream, row => {
      const el = tpl.content.firstElementChild.cloneNode(true);
      board.appendChild(el);
      return el;
    });
    for (const id of ["f-line", "f-source"]) {
      document.getElementById(id).addEventListener("change", () => {
        const q = new URLSearchParams(location.search);
        const v = document.getElementById(id).value, key = id === "f-line" ? "line" : "source";
        if (v) q.set(key, v); else q.delete(key);
        history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q.toString().replace("kiosk=", "kiosk") : ""));
        filter();
      });
    }
    filter();
    board.querySelectorAll("[data-machine]").forEach(ages);
  }

  function machinePage() {
    const m = document.querySelector("[data-machine-stream]");
    if (!m) return;
    staleAfter = Number(m.dataset.staleAfter || 300);
    const tile = m.closest("[data-machine]");
    live(tile.parentElement, m.dataset.machineStream, null);
    ages(tile);
  }

  document.addEventListener("DOMContentLoaded", () => { boardPage(); machinePage(); });
  return {post, toast, age};
})();
window.console_ = console_;
