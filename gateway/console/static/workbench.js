// The mapping workbench: a YAML editor (textarea over a backdrop that marks lines, a line-number
// gutter), validation as you type, diff, apply, versions, and the browse panel that fills tags.
// Every call goes to /console/mapping/* (the API's own route functions, with the console's cookie).
// Edits live in this page only; the mapping file changes on Apply, and only there.
"use strict";
(() => {
  const $ = id => document.getElementById(id);
  const ROLE_LINE = /^(\s*)(good|scrap|order)\s*:(.*)$/;
  let wb, ta, gutter, backdrop;
  let runningText = "", baseHash = "", checkSeq = 0, checkTimer = null;
  let problems = {errors: [], warnings: []};

  function esc(s) {
    return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  }

  async function getJson(url) {
    let r;
    try { r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}); }
    catch (e) { console_.toast("the gateway did not answer: " + e, true); return null; }
    const body = await r.json().catch(() => null);
    if (!r.ok) { console_.toast((body && body.detail) || (r.status + " " + r.statusText), true); return null; }
    return body;
  }

  // -- the editor ------------------------------------------------------------------------------
  function byLine(list) {
    const m = new Map();
    for (const p of list) if (p.in_mapping) (m.get(p.line) || m.set(p.line, []).get(p.line)).push(p);
    return m;
  }

  function paint() {
    const lines = ta.value.split("\n");
    const errs = byLine(problems.errors), warns = byLine(problems.warnings);
    const g = [], b = [];
    for (let i = 1; i <= lines.length; i++) {
      const here = errs.get(i) || warns.get(i);
      const cls = errs.has(i) ? "err" : warns.has(i) ? "warn" : "";
      const title = here ? here.map(p => (p.key ? p.key + ": " : "") + p.message).join("\n") : "";
      g.push(`<div data-line="${i}" class="${cls}"${title ? ` title="${esc(title)}"` : ""}>${i}</div>`);
      const note = here ? `<span class="wb-note">  ◀ ${esc(title.split("\n")[0])}</span>` : "";
      b.push(`<div class="${cls}">${esc(lines[i - 1]) || " "}${note}</div>`);
    }
    gutter.innerHTML = g.join("");
    backdrop.innerHTML = b.join("");
    scrolled();
  }

  function scrolled() {
    gutter.scrollTop = ta.scrollTop;
    backdrop.scrollTop = ta.scrollTop;
    backdrop.scrollLeft = ta.scrollLeft;
  }

  function lineHeight() { return parseFloat(getComputedStyle(ta).lineHeight) || 18; }

  function goToLine(n) {
    const lines = ta.value.split("\n");
    let at = 0;
    for (let i = 0; i < n - 1 && i < lines.length; i++) at += lines[i].length + 1;
    ta.focus();
    ta.setSelectionRange(at, at + (lines[n - 1] || "").length);
    ta.scrollTop = Math.max(0, (n - 4) * lineHeight());
    scrolled();
  }

  function edited() {
    const state = $("wb-state");
    const changed = ta.value !== runningText;
    state.dataset.state = changed ? "edited" : "running";
    state.textContent = changed ? "edited — not applied" : "running";
  }

  function changed() {
    paint();
    edited();
    clearTimeout(checkTimer);
    $("wb-validity").textContent = "checking…";
    $("wb-validity").className = "wb-status";
    checkTimer = setTimeout(check, 400);
  }

  function setText(text, caretLine) {
    ta.value = text;
    changed();
    if (caretLine) goToLine(caretLine);
  }

  // -- validation ----------------------------------------------------------------------------
  function showProblems(result) {
    problems = {errors: result.errors || [], warnings: result.warnings || []};
    const box = $("wb-validity");
    const n = problems.errors.length, w = problems.warnings.length;
    box.textContent = n ? `${n} error(s)` + (w ? `, ${w} warning(s)` : "") : "valid" + (w ? ` — ${w} warning(s)` : "");
    box.className = "wb-status " + (n ? "bad" : "good");
    box.dataset.valid = n ? "false" : "true";
    $("wb-messages").innerHTML = [...problems.errors.map(p => [p, "err"]), ...problems.warnings.map(p => [p, "warn"])]
      .map(([p, cls]) => `<li class="${cls}" data-line="${p.in_mapping ? p.line : ""}">${esc(p.text)}</li>`).join("");
    paint();
  }

  async function check() {
    const seq = ++checkSeq, text = ta.value;
    const r = await console_.post("/console/mapping/validate", {text});
    if (seq !== checkSeq || !r.ok) return;  // a newer edit is being checked
    showProblems(r.body);
  }

  // -- placing a tag ---------------------------------------------------------------------------
  const indentOf = line => line.match(/^\s*/)[0].length;
  const blank = line => /^\s*(#.*)?$/.test(line);

  // [first, end) of the machine's block under machines:, and its children's indent.
  function machineBlock(lines, name) {
    const top = lines.findIndex(l => /^machines\s*:/.test(l));
    if (top < 0) return null;
    const key = new RegExp("^(\\s+)[\"']?" + name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "[\"']?\\s*:\\s*$");
    let first = -1;
    for (let i = top + 1; i < lines.length; i++) {
      if (!blank(lines[i]) && indentOf(lines[i]) === 0) break;
      if (key.test(lines[i])) { first = i; break; }
    }
    if (first < 0) return null;
    const own = indentOf(lines[first]);
    let end = first + 1;
    for (let i = first + 1; i < lines.length; i++) {
      if (!blank(lines[i]) && indentOf(lines[i]) <= own) break;
      if (!blank(lines[i])) end = i + 1;
    }
    const child = lines.slice(first + 1, end).find(l => !blank(l));
    return {first, end, child: child ? indentOf(child) : own + 2};
  }

  function placeInMachine(lines, name, role, tag) {
    const block = machineBlock(lines, name);
    if (!block) { console_.toast(`no machine ${name} under machines: in the text`, true); return null; }
    const sp = n => " ".repeat(n);
    for (let i = block.first + 1; i < block.end; i++) {
      const m = lines[i].match(ROLE_LINE);
      if (m && m[2] === role) { lines[i] = `${m[1]}${role}: ${tag}`; return i + 1; }
    }
    if (role === "order") {
      lines.splice(block.end, 0, `${sp(block.child)}order: ${tag}`);
      return block.end + 1;
    }
    const counters = lines.slice(block.first + 1, block.end).findIndex(l => /^\s*counters\s*:\s*$/.test(l));
    if (counters < 0) {
      lines.splice(block.end, 0, `${sp(block.child)}counters:`, `${sp(block.child + 2)}${role}: ${tag}`);
      return block.end + 2;
    }
    const at = block.first + 1 + counters;
    let last = at;  // after the counters already there
    for (let i = at + 1; i < block.end && (blank(lines[i]) || indentOf(lines[i]) > indentOf(lines[at])); i++) last = i;
    lines.splice(last + 1, 0, `${sp(indentOf(lines[at]) + 2)}${role}: ${tag}`);
    return last + 2;
  }

  function placeAtCursor(lines, role, tag) {
    const n = ta.value.slice(0, ta.selectionStart).split("\n").length - 1;
    const line = lines[n] || "";
    const m = line.match(ROLE_LINE);
    if (m) { lines[n] = `${m[1]}${m[2]}: ${tag}`; return n + 1; }
    if (/^\s*$/.test(line)) { lines[n] = `${line}${role}: ${tag}`; return n + 1; }
    const deeper = /:\s*$/.test(line) ? 2 : 0;
    lines.splice(n + 1, 0, `${" ".repeat(indentOf(line) + deeper)}${role}: ${tag}`);
    return n + 2;
  }

  function place(role, tag) {
    const lines = ta.value.split("\n");
    const target = $("wb-target").value;
    const at = target ? placeInMachine(lines, target, role, tag) : placeAtCursor(lines, role, tag);
    if (at) setText(lines.join("\n"), at);
  }

  function addMachine() {
    const name = $("wb-new-name").value.trim(), wc = $("wb-new-wc").value.trim();
    if (!name || !wc) { console_.toast("a new machine needs a name and a work center", true); return; }
    const lines = ta.value.replace(/\n+$/, "").split("\n");
    if (machineBlock(lines, name)) { console_.toast(`${name} is in the mapping already`, true); return; }
    let top = lines.findIndex(l => /^machines\s*:/.test(l));
    if (top < 0) { lines.push("machines:"); top = lines.length - 1; }
    let end = top + 1, indent = 2;
    for (let i = top + 1; i < lines.length; i++) {
      if (!blank(lines[i]) && indentOf(lines[i]) === 0) break;
      if (!blank(lines[i])) { end = i + 1; if (end === top + 2 || indentOf(lines[i]) < indent) indent = indentOf(lines[i]); }
    }
    const sp = " ".repeat(indent), sp2 = " ".repeat(indent * 2);
    lines.splice(end, 0, `${sp}${name}:`, `${sp2}source: ${$("wb-source").value}`, `${sp2}work_center: ${wc}`,
                 `${sp2}counters:`);
    const target = $("wb-target");
    if (![...target.options].some(o => o.value === name)) target.add(new Option(name, name));
    target.value = name;
    setText(lines.join("\n") + "\n", end + 1);
  }

  // -- browse: OPC UA --------------------------------------------------------------------------
  function source() { const o = $("wb-source").selectedOptions[0]; return o ? {name: o.value, protocol: o.dataset.protocol} : null; }

  function nodeItem(n) {
    const li = document.createElement("li");
    li.dataset.nodeId = n.node_id;
    li.dataset.name = n.name;
    const value = n.value === null || n.value === undefined ? "" : ` = ${JSON.stringify(n.value)}`;
    const usable = n.counter_tag || n.order_tag;
    li.innerHTML = (n.has_children ? `<button type="button" class="wb-toggle" aria-expanded="false">▸</button>` : `<span class="wb-leaf"></span>`)
      + `<span class="wb-name" title="${esc(n.node_id)}">${esc(n.name)}</span>`
      + ` <span class="muted">${esc(n.node_class)}${n.data_type ? " " + esc(n.data_type) : ""}${esc(value)}${n.status ? " (" + esc(n.status) + ")" : ""}</span>`
      + (usable ? ` <button type="button" class="wb-use">use</button>` : "");
    if (n.has_children) li.querySelector(".wb-toggle").addEventListener("click", () => expand(li));
    if (usable) li.querySelector(".wb-use").addEventListener("click", () => {
      const role = $("wb-role").value;
      const tag = role === "order" ? n.order_tag : n.counter_tag;
      if (!tag) {
        console_.toast(`${n.name} ${role === "order" ? "cannot be the order tag" : n.counter_problem}`, true);
        return;
      }
      place(role, tag);
    });
    return li;
  }

  async function level(node) {
    const s = source();
    const q = node ? "?node=" + encodeURIComponent(node) : "";
    return getJson(`/console/mapping/browse/opcua/${encodeURIComponent(s.name)}${q}`);
  }

  async function expand(li) {
    const button = li.querySelector(".wb-toggle");
    const open = li.querySelector("ul");
    if (open) { open.remove(); button.textContent = "▸"; button.setAttribute("aria-expanded", "false"); return; }
    button.disabled = true;
    const found = await level(li.dataset.nodeId);
    button.disabled = false;
    if (!found) return;
    const ul = document.createElement("ul");
    found.children.forEach(n => ul.appendChild(nodeItem(n)));
    li.appendChild(ul);
    button.textContent = "▾"; button.setAttribute("aria-expanded", "true");
  }

  async function browse() {
    const s = source();
    if (!s) return;
    if (s.protocol === "modbus") { read(); return; }
    const tree = $("wb-tree");
    tree.innerHTML = `<li class="muted">reading ${esc(s.name)}…</li>`;
    const found = await level(null);
    tree.innerHTML = "";
    if (found) found.children.forEach(n => tree.appendChild(nodeItem(n)));
  }

  // -- browse: Modbus ---------------------------------------------------------------------------
  async function read() {
    const s = source(), table = $("wb-table").value;
    const q = new URLSearchParams({table, start: $("wb-start").value || "0", count: $("wb-count").value || "16"});
    const found = await getJson(`/console/mapping/browse/modbus/${encodeURIComponent(s.name)}?${q}`);
    const t = $("wb-registers");
    if (!found) { t.hidden = true; return; }
    const cols = [["uint16", ["AB", "BA"]], ["uint32", ["ABCD", "CDAB", "BADC", "DCBA"]],
                  ["uint64", ["ABCD", "CDAB", "BADC", "DCBA"]]];
    let html = `<thead><tr><th rowspan="2">address</th><th rowspan="2">raw</th><th rowspan="2">hex</th>`
      + cols.map(([type, orders]) => `<th colspan="${orders.length}">${type}</th>`).join("") + `</tr><tr>`
      + cols.map(([, orders]) => orders.map(o => `<th class="num">${o}</th>`).join("")).join("") + `</tr></thead><tbody>`;
    for (const row of found.rows) {
      html += `<tr><td class="num">${row.address}</td><td class="num">${row.raw}</td><td><code>${row.hex}</code></td>`;
      for (const [type, orders] of cols) for (const o of orders) {
        const v = row[type][o];
        html += v === undefined ? `<td></td>` : `<td class="num"><button type="button" class="wb-cell" data-address="${row.address}" data-type="${type}" data-order="${o}" title="use as ${type} ${o}">${v}</button></td>`;
      }
      html += `</tr>`;
    }
    t.innerHTML = html + `</tbody>`;
    t.hidden = false;
    t.querySelectorAll(".wb-cell").forEach(b => b.addEventListener("click", () => {
      const order = found.orders[b.dataset.order];
      let tag = `{register: ${b.dataset.address}, type: ${b.dataset.type}`;
      if (found.table !== "holding") tag += `, table: ${found.table}`;
      if (order.word_order !== "big" && b.dataset.type !== "uint16") tag += `, word_order: ${order.word_order}`;
      if (order.byte_order !== "big") tag += `, byte_order: ${order.byte_order}`;
      place($("wb-role").value, tag + "}");
    }));
  }

  function sourceChanged() {
    const s = source();
    const modbus = s && s.protocol === "modbus";
    $("wb-modbus").hidden = !modbus;
    $("wb-tree").hidden = modbus;
    $("wb-registers").hidden = true;
    $("wb-tree").innerHTML = "";
    $("wb-browse").textContent = modbus ? "Read registers" : "Browse";
  }

  // -- diff, apply, versions ------------------------------------------------------------------------
  function tab(name) {
    document.querySelectorAll(".wb-tabs [data-tab]").forEach(b => b.setAttribute("aria-selected", String(b.dataset.tab === name)));
    document.querySelectorAll(".wb-panel").forEach(p => { p.hidden = p.dataset.panel !== name; });
    if (name === "versions") versions();
  }

  async function diff() {
    const r = await console_.post("/console/mapping/diff", {text: ta.value});
    if (!r.ok) return;
    const d = r.body;
    showProblems(d);
    const list = (what, names) => `<li><b>${what}</b>: ${names.length ? names.map(esc).join(", ") : "none"}</li>`;
    $("wb-change").innerHTML = d.valid
      ? `<ul class="wb-summary">${list("machines added", d.added)}${list("removed", d.removed)}${list("changed", d.changed)}`
        + `<li><b>unchanged</b>: ${d.unchanged.length}</li>${list("sources reconnected", d.sources_reconnected)}`
        + `${list("started", d.sources_started)}${list("stopped", d.sources_stopped)}</ul>`
      : `<p class="result bad">The text has errors; a reload would refuse it.</p>`;
    $("wb-difftext").innerHTML = d.text_diff ? d.text_diff.split("\n").map(l => {
      const cls = l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del"
        : l.startsWith("@@") ? "hunk" : "";
      return `<span class="${cls}">${esc(l)}</span>`;
    }).join("\n") : `<span class="muted">no difference to the running file</span>`;
    tab("diff");
  }

  function applied(r, text) {
    const box = $("wb-result");
    box.hidden = false;
    if (!r.ok) {
      box.className = "wb-result bad";
      box.textContent = (r.body && r.body.detail) || `refused (${r.status})`;
      return;
    }
    const res = r.body;
    box.className = "wb-result " + (res.outcome === "applied" ? "good" : "bad");
    box.dataset.outcome = res.outcome;
    box.innerHTML = `<b>${res.outcome}</b>: <span>${esc(res.detail).replace(/\n/g, "<br>")}</span>`;
    showProblems(res);
    if (res.outcome === "applied") {
      runningText = text; baseHash = res.hash;
      $("wb-version").textContent = res.version_id ? `version ${res.version_id}` : "applied (its version was not recorded)";
      edited();
      console_.toast("applied: " + res.detail, false);
      if (!$("wb-versions").closest(".wb-panel").hidden) versions();
    }
  }

  async function apply() {
    const text = ta.value;
    const button = $("wb-apply");
    button.disabled = true;
    const r = await console_.post("/console/actions/mapping/apply", {text, base_hash: baseHash, comment: $("wb-comment").value});
    button.disabled = false;
    applied(r, text);
    if (r.ok && r.body.outcome === "applied") $("wb-comment").value = "";
  }

  async function versions() {
    const list = await getJson("/console/mapping/versions");
    if (!list) return;
    const canAct = wb.dataset.canAct === "true";
    $("wb-versions").innerHTML = list.map(v => `<tr data-version="${v.id}"><td class="num">${v.id}</td>`
      + `<td>${esc(v.applied_at.replace("T", " ").slice(0, 19))}</td><td>${esc(v.actor)}</td>`
      + `<td>${esc(v.comment)}<div class="muted">${esc(v.diff_summary)}</div></td>`
      + `<td><button type="button" class="wb-load">load</button>`
      + (canAct ? ` <button type="button" class="wb-restore">restore</button>` : "") + `</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">Nothing applied through the workbench yet.</td></tr>`;
    $("wb-versions").querySelectorAll("tr[data-version]").forEach(tr => {
      const id = tr.dataset.version;
      tr.querySelector(".wb-load").addEventListener("click", async () => {
        const v = await getJson(`/console/mapping/versions/${id}`);
        if (v) { setText(v.text, 1); console_.toast(`version ${id} loaded into the editor (not applied)`, false); }
      });
      const restore = tr.querySelector(".wb-restore");
      if (restore) restore.addEventListener("click", async () => {
        if (!confirm(`Apply version ${id} again? The running mapping is replaced by it.`)) return;
        const v = await getJson(`/console/mapping/versions/${id}`);
        if (!v) return;
        const r = await console_.post(`/console/actions/mapping/versions/${id}/restore`, {base_hash: baseHash});
        if (r.ok && r.body.outcome === "applied") setText(v.text, 1);
        applied(r, v.text);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    wb = $("workbench");
    if (!wb) return;
    ta = $("wb-text"); gutter = $("wb-gutter"); backdrop = $("wb-backdrop");
    runningText = ta.value; baseHash = wb.dataset.hash;
    ta.addEventListener("input", changed);
    ta.addEventListener("scroll", scrolled);
    ta.addEventListener("keydown", e => {  // Tab indents (two spaces) instead of leaving the editor
      if (e.key !== "Tab" || e.shiftKey) return;
      e.preventDefault();
      ta.setRangeText("  ", ta.selectionStart, ta.selectionEnd, "end");
      changed();
    });
    $("wb-messages").addEventListener("click", e => {
      const li = e.target.closest("li[data-line]");
      if (li && li.dataset.line) goToLine(Number(li.dataset.line));
    });
    gutter.addEventListener("click", e => { const d = e.target.closest("[data-line]"); if (d) goToLine(Number(d.dataset.line)); });
    $("wb-diff").addEventListener("click", diff);
    $("wb-revert").addEventListener("click", () => setText(runningText, 1));
    if ($("wb-apply")) $("wb-apply").addEventListener("click", apply);
    $("wb-browse").addEventListener("click", browse);
    $("wb-read").addEventListener("click", read);
    $("wb-source").addEventListener("change", sourceChanged);
    $("wb-add-machine").addEventListener("click", addMachine);
    document.querySelectorAll(".wb-tabs [data-tab]").forEach(b => b.addEventListener("click", () => tab(b.dataset.tab)));
    window.addEventListener("beforeunload", e => { if (ta.value !== runningText) e.preventDefault(); });
    sourceChanged();
    changed();
  });
})();
