// interprettensor viewer: plain JavaScript, no libraries; plots are drawn as inline SVG.
"use strict";

const PAGE = 48;
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const NOISE = "#bbbbbb";
const SVGNS = "http://www.w3.org/2000/svg";

const state = {
  info: null, runs: {}, offset: 0, total: 0,
  spray: { data: null, cluster: null, members: [], offset: 0 },
  concepts: { channel: null },
};

const $ = (id) => document.getElementById(id);

function status(msg) { $("status").textContent = msg || ""; }

// a message in a tab (its data is empty or cannot be shown); "" hides it
function note(id, msg) { $(id).textContent = msg || ""; $(id).hidden = !msg; }

// one view's latest request: an answer that arrives after a later request of the same view was made
// (another channel, sample or class clicked meanwhile) is dropped, never drawn over the newer one
const tickets = {};
function ticket(view) {
  const t = (tickets[view] = (tickets[view] || 0) + 1);
  return () => tickets[view] === t;
}

let pending = 0;  // API requests under way, as body[data-pending] (tests wait for "0")

async function api(path, params) {
  const url = path + (params ? "?" + new URLSearchParams(params) : "");
  document.body.dataset.pending = ++pending;
  try {
    const res = await fetch(url);
    const body = await res.json().catch(() => ({ error: res.statusText }));
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  } finally {
    // after the caller's code that follows the answer has run (a microtask later)
    setTimeout(() => { document.body.dataset.pending = --pending; }, 0);
  }
}

function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else if (k === "dataset") Object.assign(e.dataset, v); else e.setAttribute(k, v);
  }
  for (const c of children || []) e.appendChild(c);
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fill(select, options, keep) {
  const old = select.value;
  select.innerHTML = "";
  for (const [value, label] of options) select.appendChild(el("option", { value: value, text: label }));
  if (keep && options.some(([v]) => String(v) === old)) select.value = old;
}

function byNumber(a, b) { return Number(a) - Number(b) || String(a).localeCompare(String(b)); }

function imgUrl(run, index, kind, size) {
  return "/img/sample.png?" + new URLSearchParams({ run: run, index: index, kind: kind, cmap: $("cmap").value,
                                                    size: size || 96 });
}

// ---------------------------------------------------------------- tabs
function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
  if (name === "spray") loadSpray();
  if (name === "concepts") loadChannels();
}

// ---------------------------------------------------------------- samples
function currentRun() { return state.runs[$("rule").value]; }

function fillGroups() {
  const groups = {};
  for (const r of state.info.runs) (groups[r.group] = groups[r.group] || []).push(r);
  fill($("group"), Object.entries(groups).map(([g, rs]) => [g, `${rs[0].name} (${rs[0].n} samples)`]), true);
  $("group-box").hidden = Object.keys(groups).length < 2;
  fillRules();
}

function fillRules() {
  const g = $("group").value;
  const rs = state.info.runs.filter((r) => String(r.group) === g);
  fill($("rule"), rs.map((r) => [r.name, r.rule && r.rule !== r.name ? `${r.name}: ${r.rule}` : r.name]), true);
  fillKinds();
  fillClasses();
}

function fillKinds() {
  const r = currentRun();
  const kinds = state.info.kinds.filter((k) => k === "heatmap" || r.has_inputs);
  fill($("kind"), kinds.map((k) => [k, k]), true);
}

function fillClasses() {
  const r = currentRun();
  const by = $("filter-by"), byLabel = by.querySelector('option[value="label"]');
  byLabel.disabled = byLabel.hidden = !r.has_labels;
  if (!r.has_labels) by.value = "target";
  note("label-note", r.has_labels ? "" : "no labels stored in this run: filter by the explained class");
  const counts = by.value === "label" ? r.labels : r.targets;
  const keys = Object.keys(counts).sort(byNumber);
  const name = (c) => (by.value === "label" && Number(c) < 0 ? "unknown" : c);  // label -1: unknown
  fill($("class"), [["", `all (${r.n})`]].concat(keys.map((c) => [c, `${name(c)} (${counts[c]})`])), true);
  note("samples-note", r.damaged && r.damaged.length ?
    `${r.unavailable} of ${r.n} samples are unavailable: ${r.damaged.join(" ")}` : "");
}

async function loadPage() {
  const r = currentRun();
  if (!r) return;
  const params = { run: r.name, offset: state.offset, limit: PAGE };
  if ($("class").value !== "") params[$("filter-by").value] = $("class").value;
  const fresh = ticket("grid");
  try {
    const page = await api("/api/samples", params);
    if (!fresh()) return;  // a later request (another filter, rule or page) answers for the grid
    state.total = page.total;
    renderThumbs($("grid"), r.name, page.items);
    const last = Math.min(page.total, state.offset + page.items.length);
    $("page-info").textContent = page.total ? ` ${state.offset + 1}-${last} of ${page.total} ` : " no samples ";
    $("prev").disabled = state.offset === 0;
    $("next").disabled = last >= page.total;
    status("");
  } catch (e) { if (fresh()) status(e.message); }
}

function caption(item) {
  if (item.unavailable) return `#${item.index} unavailable (${item.shard})`;
  let s = `#${item.index} c=${item.target}`;
  if (item.label !== undefined) s += ` y=${item.label}`;
  if (!item.valid) s += " (skipped)";
  return item.name ? `${s} ${item.name}` : s;
}

function renderThumbs(grid, run, items) {
  grid.innerHTML = "";
  const kind = $("kind").value || "heatmap";
  for (const item of items) grid.appendChild(thumb(run, item, kind, true));
}

// a sample's thumbnail; one of a damaged shard says so (file and advice) instead of a picture
function thumb(run, item, kind, lazy) {
  if (item.unavailable) {
    const fig = el("figure", { class: "thumb unavailable", title: item.unavailable,
                               dataset: { index: item.index, run: run, unavailable: "1" } },
                   [el("div", { class: "missing", text: `unavailable: ${item.shard} is damaged; rerun with --resume` }),
                    el("figcaption", { text: caption(item) })]);
    fig.addEventListener("click", () => status(item.unavailable));
    return fig;
  }
  const attrs = { src: imgUrl(run, item.index, kind), alt: `sample ${item.index}` };
  if (lazy) attrs.loading = "lazy";
  const fig = el("figure", { class: "thumb" + (item.valid ? "" : " invalid"), title: caption(item),
                             dataset: { index: item.index, run: run } },
                 [el("img", attrs), el("figcaption", { text: caption(item) })]);
  fig.addEventListener("click", () => showDetail(run, item.index));
  return fig;
}

function refreshImages() {
  for (const img of document.querySelectorAll(".thumb img")) {
    const fig = img.parentElement;
    const kind = fig.closest("#cluster-grid") ? "heatmap" : ($("kind").value || "heatmap");
    img.src = imgUrl(fig.dataset.run, fig.dataset.index, kind);
  }
  if (!$("detail").hidden && state.detail) showDetail(state.detail.run, state.detail.index);
  if (state.concepts.channel !== null) loadExamples(state.concepts.channel);
}

async function showDetail(run, index) {
  state.detail = { run: run, index: index };
  const fresh = ticket("detail");
  try {
    const d = await api("/api/sample", { run: run, index: index });
    if (!fresh()) return;
    const r = state.runs[run];
    $("detail-title").textContent = `sample ${index} (${run})`;
    const kinds = r.has_inputs ? ["input", "heatmap", "overlay"] : ["heatmap"];
    $("detail-images").innerHTML = "";
    for (const k of kinds) {
      $("detail-images").appendChild(el("figure", {}, [el("img", { src: imgUrl(run, index, k, 384), alt: k, "data-kind": k }),
                                                      el("figcaption", { text: k })]));
    }
    const rows = [["explained class", d.target], ["label", d.label === undefined ? "none" : d.label],
                  ["valid", d.valid ? "yes" : "no (NaN/inf, skipped)"]].concat(d.name ? [["name", d.name]] : []).concat([
                  ["relevance sum", d.relevance_sum.toPrecision(4)],
                  ["max |relevance|", d.relevance_maxabs.toPrecision(4)],
                  ["top outputs", d.top_outputs.map((o) => `${o.class}: ${o.value.toPrecision(3)}`).join(", ")]]);
    $("detail-info").innerHTML = "";
    for (const [k, v] of rows) $("detail-info").appendChild(el("tr", {}, [el("td", { text: k }), el("td", { text: String(v) })]));
    $("detail").hidden = false;
  } catch (e) { if (fresh()) status(e.message); }
}

// ---------------------------------------------------------------- SpRAy
function fillSpray() {
  const names = Object.keys(state.info.spray);
  fill($("spray-run"), names.map((n) => [n, n]), true);
  fillSprayClasses();
}

// the selected run's SpRAy results if they hold a class to show, else null (the tab says why)
function currentSpray() {
  const s = state.info.spray[$("spray-run").value];
  if (!s) return null;
  const classes = Object.keys(s.classes || {});
  if (s.error || !classes.length) {
    const skipped = Object.entries(s.skipped || {}).map(([c, why]) => `class ${c}: ${why}`).join("; ");
    note("spray-note", s.error ? `the SpRAy results of this run cannot be shown: ${s.error}` :
      s.empty || `SpRAy analysed no class of this run (${skipped ? "all skipped: " + skipped : "no classes"})`);
    return null;
  }
  note("spray-note", "");
  return s;
}

function resetSpray() {
  for (const id of ["scatter", "eigen", "legend", "cluster-grid"]) $(id).innerHTML = "";
  $("scatter-caption").textContent = "";
  $("cluster-title").textContent = "";
  $("cluster-pager").hidden = true;
  state.spray.data = null;
  state.spray.cluster = null;
}

// called when the run or the class changes: the clustering becomes the k-means one with the number of
// clusters the eigengap suggests for the new class (else the one chosen before, if the class has it)
function fillSprayClasses() {
  const s = currentSpray();
  const ok = s !== null;
  for (const id of ["spray-class", "spray-embedding", "spray-clustering"]) $(id).disabled = !ok;
  $("spray-plots").hidden = !ok;
  if (!ok) {
    for (const id of ["spray-class", "spray-embedding", "spray-clustering"]) fill($(id), []);
    resetSpray();
    return;
  }
  const classes = Object.keys(s.classes).sort(byNumber);
  fill($("spray-class"), classes.map((c) => [c, `${c} (${s.classes[c].n} samples)`]), true);
  const c = s.classes[$("spray-class").value];
  fill($("spray-embedding"), c.embeddings.map((e) => [e, e]), true);
  fill($("spray-clustering"), c.clusterings.map((e) => [e, e]), true);
  const suggested = `kmeans-${c.eigengap}`;
  if (c.clusterings.includes(suggested)) $("spray-clustering").value = suggested;
}

async function loadSpray() {
  const run = $("spray-run").value;
  if (!run || !currentSpray()) return;
  const fresh = ticket("spray");
  try {
    const data = await api("/api/spray", { run: run, class: $("spray-class").value,
                                           embedding: $("spray-embedding").value });
    if (!fresh()) return;
    state.spray.data = data;
    state.spray.cluster = null;
    drawScatter();
    drawEigen();
    drawLegend();
    $("cluster-grid").innerHTML = "";
    $("cluster-title").textContent = "click a cluster or a point to see its samples";
    $("cluster-pager").hidden = true;
    status("");
  } catch (e) { if (fresh()) status(e.message); }
}

function clusterLabels() {
  const d = state.spray.data;
  return d.clusterings[$("spray-clustering").value] || d.points.map(() => 0);
}

function colour(c) { return c < 0 ? NOISE : PALETTE[c % PALETTE.length]; }

function scale(values, lo, hi) {
  let min = Math.min(...values), max = Math.max(...values);
  if (!(max > min)) { min -= 1; max += 1; }
  return (v) => lo + (v - min) / (max - min) * (hi - lo);
}

function drawScatter() {
  const svg = $("scatter"), d = state.spray.data, labels = clusterLabels();
  svg.innerHTML = "";
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), pad = 14;
  const sx = scale(d.points.map((p) => p[0]), pad, W - pad), sy = scale(d.points.map((p) => p[1]), H - pad, pad);
  d.points.forEach((p, i) => {
    const c = svgEl("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 4, fill: colour(labels[i]),
                                "data-index": d.indices[i], "data-cluster": labels[i] });
    c.appendChild(svgEl("title", {})).textContent = `sample ${d.indices[i]}, cluster ${labels[i]}`;
    c.addEventListener("click", () => { selectCluster(labels[i]); showDetail($("spray-run").value, d.indices[i]); });
    svg.appendChild(c);
  });
  const cols = d.embedding === "spectral" ? ` (eigenvectors ${d.columns[0] + 1}, ${d.columns[1] + 1})` : "";
  $("scatter-caption").textContent = `${d.embedding}${cols} of class ${d.class}: ${d.points.length} samples coloured by ` +
    `${$("spray-clustering").value || "nothing"}`;
}

function drawEigen() {
  const svg = $("eigen"), ev = state.spray.data.eigenvalues;
  svg.innerHTML = "";
  if (!ev.length) return;
  // the plot area starts below a band at the top that holds the eigengap's label: nothing overdraws it
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), left = 52, pad = 16, top = 32;
  const num = (v) => (Math.abs(v) < 1e-9 ? "0" : v.toPrecision(2));
  const sx = scale(ev.map((_, i) => i + 1), left, W - pad), sy = scale(ev, H - 26, top);
  svg.appendChild(svgEl("line", { x1: left, y1: H - 26, x2: W - pad, y2: H - 26, stroke: "#999" }));
  svg.appendChild(svgEl("line", { x1: left, y1: top, x2: left, y2: H - 26, stroke: "#999" }));
  // the library's eigengap (spray.json, or computed by the server as the library does for old files):
  // k clusters, the gap between eigenvalues k and k + 1
  const k = state.spray.data.eigengap, at = k >= 1 && k < ev.length ? k : -1;
  if (at > 0) {
    const gx = (sx(at) + sx(at + 1)) / 2;
    svg.appendChild(svgEl("line", { x1: gx, y1: top - 6, x2: gx, y2: H - 26, stroke: "#d62728",
                                    "stroke-dasharray": "3,3", class: "eigengap" }));
  }
  svg.appendChild(svgEl("polyline", { points: ev.map((v, i) => `${sx(i + 1)},${sy(v)}`).join(" "), fill: "none",
                                      stroke: "#0288d1" }));
  ev.forEach((v, i) => {
    const c = svgEl("circle", { cx: sx(i + 1), cy: sy(v), r: 3.5, fill: i === at - 1 ? "#d62728" : "#0288d1",
                                class: "eigenvalue" });
    c.appendChild(svgEl("title", {})).textContent = `eigenvalue ${i + 1}: ${v.toPrecision(4)}`;
    svg.appendChild(c);
  });
  const t = (x, y, s, anchor) => { const e = svgEl("text", { x: x, y: y, "font-size": 11, "text-anchor": anchor || "middle" });
                                   e.textContent = s; svg.appendChild(e); };
  t(left - 4, sy(Math.max(...ev)) + 4, num(Math.max(...ev)), "end");
  t(left - 4, sy(Math.min(...ev)) + 4, num(Math.min(...ev)), "end");
  t(sx(1), H - 10, "1");
  t(sx(ev.length), H - 10, String(ev.length));
  if (at > 0) {  // above the plot area, beside the marker (to its left where it is near the right edge)
    const gx = (sx(at) + sx(at + 1)) / 2, right = gx > W - 130;
    t(right ? gx - 4 : gx + 4, top - 14, `gap after ${at} (${at} clusters)`, right ? "end" : "start");
    svg.lastChild.setAttribute("class", "eigengap");
  }
}

function drawLegend() {
  const labels = clusterLabels(), counts = {};
  for (const c of labels) counts[c] = (counts[c] || 0) + 1;
  const box = $("legend");
  box.innerHTML = "";
  for (const c of Object.keys(counts).sort(byNumber)) {
    const b = el("button", { "data-cluster": c }, [el("span", { class: "swatch", style: `background:${colour(+c)}` })]);
    b.appendChild(document.createTextNode(`${+c < 0 ? "noise" : "cluster " + c} (${counts[c]})`));
    b.addEventListener("click", () => selectCluster(+c));
    box.appendChild(b);
  }
}

function selectCluster(c) {
  const d = state.spray.data, labels = clusterLabels();
  state.spray.cluster = c;
  state.spray.members = d.indices.filter((_, i) => labels[i] === c);
  state.spray.offset = 0;
  for (const b of document.querySelectorAll("#legend button")) b.classList.toggle("active", +b.dataset.cluster === c);
  for (const p of document.querySelectorAll("#scatter circle")) p.classList.toggle("dim", +p.dataset.cluster !== c);
  $("cluster-title").textContent = `${c < 0 ? "noise" : "cluster " + c}: ${state.spray.members.length} samples of class ${d.class}`;
  loadClusterPage();
}

async function loadClusterPage() {
  const run = $("spray-run").value, m = state.spray.members, o = state.spray.offset;
  const ids = m.slice(o, o + PAGE);
  const fresh = ticket("cluster");
  try {
    const page = await api("/api/samples", { run: run, ids: ids.join(","), limit: PAGE });
    if (!fresh()) return;
    const grid = $("cluster-grid");
    grid.innerHTML = "";
    for (const item of page.items) grid.appendChild(thumb(run, item, "heatmap", false));
    $("cluster-pager").hidden = m.length <= PAGE;
    $("cluster-info").textContent = ` ${o + 1}-${o + ids.length} of ${m.length} `;
    $("cluster-prev").disabled = o === 0;
    $("cluster-next").disabled = o + PAGE >= m.length;
  } catch (e) { if (fresh()) status(e.message); }
}

// ---------------------------------------------------------------- concepts
function currentConcepts() { return state.info.concepts.find((c) => c.name === $("concepts-run").value); }

function fillConcepts() {
  fill($("concepts-run"), state.info.concepts.map((c) => [c.name, `${c.name}${c.rule ? ": " + c.rule : ""}`]), true);
  fillLayers();
}

function fillLayers() {
  const c = currentConcepts();
  if (!c) return;
  fill($("concepts-layer"), Object.entries(c.layers).map(([name, v]) => [name, `${name} (${v.channels} channels)`]), true);
}

async function loadChannels() {
  const c = currentConcepts();
  if (!c) return;
  const fresh = ticket("channels");
  try {
    const res = await api("/api/concepts/channels", { run: c.name, layer: $("concepts-layer").value,
                                                      order: $("concepts-order").value });
    if (!fresh()) return;
    const box = $("channels");
    box.innerHTML = "";
    for (const ch of res.channels) {
      const b = el("button", { "data-channel": ch.channel,
                               text: `channel ${ch.channel}: R ${ch.mean_relevance.toPrecision(3)}, ` +
                                     `act ${ch.max_activation.toPrecision(3)}` });
      b.addEventListener("click", () => loadExamples(ch.channel));
      box.appendChild(b);
    }
    if (res.channels.length) loadExamples(state.concepts.channel !== null &&
      res.channels.some((ch) => ch.channel === state.concepts.channel) ? state.concepts.channel : res.channels[0].channel);
    status("");
  } catch (e) { if (fresh()) status(e.message); }
}

async function loadExamples(channel) {
  const c = currentConcepts(), layer = $("concepts-layer").value, mode = $("concepts-mode").value;
  state.concepts.channel = channel;
  for (const b of document.querySelectorAll("#channels button")) b.classList.toggle("active", +b.dataset.channel === channel);
  const fresh = ticket("examples");
  try {
    const res = await api("/api/concepts/examples", { run: c.name, layer: layer, channel: channel, mode: mode });
    if (!fresh()) return;
    $("channel-title").textContent = `${layer}, channel ${channel}: the ${res.examples.length} most ` +
      `${mode === "relevance" ? "relevant" : "activating"} examples (crop and conditional heatmap)`;
    const box = $("examples");
    box.innerHTML = "";
    for (const ex of res.examples) {
      const q = (kind) => "/img/concept.png?" + new URLSearchParams({ run: c.name, layer: layer, channel: channel, mode: mode,
                                                                      rank: ex.rank, kind: kind, cmap: $("cmap").value });
      const caption = el("figcaption", { text: `#${ex.sample}: ${ex.value.toPrecision(3)}` +
                                                 (ex.pictures === false ? " (no pictures drawn for this channel)" : "") });
      box.appendChild(el("figure", { class: "example", "data-sample": ex.sample }, ex.pictures === false ? [caption] : [
        el("img", { src: q("crop"), alt: `crop of sample ${ex.sample}`, class: "crop" }),
        el("img", { src: q("heatmap"), alt: `heatmap of sample ${ex.sample}`, class: "heat" }), caption]));
    }
  } catch (e) { if (fresh()) status(e.message); }
}

// ---------------------------------------------------------------- start
async function start() {
  try {
    state.info = await api("/api/runs");
  } catch (e) { status(e.message); return; }
  for (const r of state.info.runs) state.runs[r.name] = r;
  fill($("cmap"), state.info.cmaps.map((c) => [c, c]));
  const tabs = { samples: state.info.runs.length > 0, spray: Object.keys(state.info.spray).length > 0,
                 concepts: state.info.concepts.length > 0 };
  for (const b of document.querySelectorAll("#tabs button")) {
    b.disabled = !tabs[b.dataset.tab];
    b.addEventListener("click", () => showTab(b.dataset.tab));
  }
  $("cmap").addEventListener("change", refreshImages);
  $("group").addEventListener("change", () => { state.offset = 0; fillRules(); loadPage(); });
  $("rule").addEventListener("change", () => { fillKinds(); fillClasses(); refreshImages(); loadPage(); });
  $("kind").addEventListener("change", refreshImages);
  $("filter-by").addEventListener("change", () => { fillClasses(); state.offset = 0; loadPage(); });
  $("class").addEventListener("change", () => { state.offset = 0; loadPage(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadPage(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadPage(); });
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("spray-run").addEventListener("change", () => { fillSprayClasses(); loadSpray(); });
  $("spray-class").addEventListener("change", () => { fillSprayClasses(); loadSpray(); });
  $("spray-embedding").addEventListener("change", loadSpray);
  $("spray-clustering").addEventListener("change", () => { state.spray.cluster = null; drawScatter(); drawLegend();
                                                           $("cluster-grid").innerHTML = "";
                                                           $("cluster-pager").hidden = true; });
  $("cluster-prev").addEventListener("click", () => { state.spray.offset -= PAGE; loadClusterPage(); });
  $("cluster-next").addEventListener("click", () => { state.spray.offset += PAGE; loadClusterPage(); });
  $("concepts-run").addEventListener("change", () => { fillLayers(); loadChannels(); });
  $("concepts-layer").addEventListener("change", () => { state.concepts.channel = null; loadChannels(); });
  $("concepts-order").addEventListener("change", loadChannels);
  $("concepts-mode").addEventListener("change", () => loadExamples(state.concepts.channel));
  // each tab filled on its own: whatever one tab's data holds, the others are shown
  const guarded = (id, what, f) => { try { f(); } catch (e) { note(id, `${what} cannot be shown: ${e.message}`); } };
  if (tabs.spray) guarded("spray-note", "the SpRAy results", fillSpray);
  if (tabs.concepts) guarded("concepts-note", "the concepts", fillConcepts);
  if (tabs.samples) {
    guarded("samples-note", "the samples", fillGroups);
    await loadPage();
  } else {
    showTab(tabs.spray ? "spray" : "concepts");
  }
  document.body.dataset.ready = "1";
}

start();
