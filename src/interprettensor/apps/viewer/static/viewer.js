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

async function api(path, params) {
  const url = path + (params ? "?" + new URLSearchParams(params) : "");
  const res = await fetch(url);
  const body = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
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
  const by = $("filter-by");
  by.querySelector('option[value="label"]').disabled = !r.has_labels;
  if (!r.has_labels) by.value = "target";
  const counts = by.value === "label" ? r.labels : r.targets;
  const keys = Object.keys(counts).sort(byNumber);
  fill($("class"), [["", `all (${r.n})`]].concat(keys.map((c) => [c, `${c} (${counts[c]})`])), true);
}

async function loadPage() {
  const r = currentRun();
  if (!r) return;
  const params = { run: r.name, offset: state.offset, limit: PAGE };
  if ($("class").value !== "") params[$("filter-by").value] = $("class").value;
  try {
    const page = await api("/api/samples", params);
    state.total = page.total;
    renderThumbs($("grid"), r.name, page.items);
    const last = Math.min(page.total, state.offset + page.items.length);
    $("page-info").textContent = page.total ? ` ${state.offset + 1}-${last} of ${page.total} ` : " no samples ";
    $("prev").disabled = state.offset === 0;
    $("next").disabled = last >= page.total;
    status("");
  } catch (e) { status(e.message); }
}

function caption(item) {
  let s = `#${item.index} c=${item.target}`;
  if (item.label !== undefined) s += ` y=${item.label}`;
  if (!item.valid) s += " (skipped)";
  return item.name ? `${s} ${item.name}` : s;
}

function renderThumbs(grid, run, items) {
  grid.innerHTML = "";
  const kind = $("kind").value || "heatmap";
  for (const item of items) {
    const fig = el("figure", { class: "thumb" + (item.valid ? "" : " invalid"), title: caption(item),
                               dataset: { index: item.index, run: run } },
                   [el("img", { src: imgUrl(run, item.index, kind), alt: `sample ${item.index}`, loading: "lazy" }),
                    el("figcaption", { text: caption(item) })]);
    fig.addEventListener("click", () => showDetail(run, item.index));
    grid.appendChild(fig);
  }
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
  try {
    const d = await api("/api/sample", { run: run, index: index });
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
  } catch (e) { status(e.message); }
}

// ---------------------------------------------------------------- SpRAy
function fillSpray() {
  const names = Object.keys(state.info.spray);
  fill($("spray-run"), names.map((n) => [n, n]), true);
  fillSprayClasses();
}

function fillSprayClasses() {
  const s = state.info.spray[$("spray-run").value];
  if (!s) return;
  const classes = Object.keys(s.classes).sort(byNumber);
  fill($("spray-class"), classes.map((c) => [c, `${c} (${s.classes[c].n} samples)`]), true);
  const c = s.classes[$("spray-class").value];
  fill($("spray-embedding"), c.embeddings.map((e) => [e, e]), true);
  const before = $("spray-clustering").value;
  fill($("spray-clustering"), c.clusterings.map((e) => [e, e]), true);
  // by default the k-means clustering with the number of clusters the eigengap suggests
  const suggested = `kmeans-${c.eigengap}`;
  if (!c.clusterings.includes(before) && c.clusterings.includes(suggested)) $("spray-clustering").value = suggested;
}

async function loadSpray() {
  const run = $("spray-run").value;
  if (!run) return;
  try {
    state.spray.data = await api("/api/spray", { run: run, class: $("spray-class").value,
                                                 embedding: $("spray-embedding").value });
    state.spray.cluster = null;
    drawScatter();
    drawEigen();
    drawLegend();
    $("cluster-grid").innerHTML = "";
    $("cluster-title").textContent = "click a cluster or a point to see its samples";
    $("cluster-pager").hidden = true;
    status("");
  } catch (e) { status(e.message); }
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
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), left = 52, pad = 16;
  const num = (v) => (Math.abs(v) < 1e-9 ? "0" : v.toPrecision(2));
  const sx = scale(ev.map((_, i) => i + 1), left, W - pad), sy = scale(ev, H - 26, pad);
  svg.appendChild(svgEl("line", { x1: left, y1: H - 26, x2: W - pad, y2: H - 26, stroke: "#999" }));
  svg.appendChild(svgEl("line", { x1: left, y1: pad, x2: left, y2: H - 26, stroke: "#999" }));
  let gap = 0, at = -1;
  for (let i = 1; i < ev.length; i++) if (ev[i] - ev[i - 1] > gap) { gap = ev[i] - ev[i - 1]; at = i; }
  svg.appendChild(svgEl("polyline", { points: ev.map((v, i) => `${sx(i + 1)},${sy(v)}`).join(" "), fill: "none",
                                      stroke: "#0288d1" }));
  ev.forEach((v, i) => {
    const c = svgEl("circle", { cx: sx(i + 1), cy: sy(v), r: 3.5, fill: i === at ? "#d62728" : "#0288d1",
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
  if (at > 0) t(sx(at + 0.5), sy(ev[at]) - 8, `gap after ${at}`);
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
  try {
    const page = await api("/api/samples", { run: run, ids: ids.join(","), limit: PAGE });
    const grid = $("cluster-grid");
    grid.innerHTML = "";
    for (const item of page.items) {
      const fig = el("figure", { class: "thumb", title: caption(item), dataset: { index: item.index, run: run } },
                     [el("img", { src: imgUrl(run, item.index, "heatmap"), alt: `sample ${item.index}` }),
                      el("figcaption", { text: caption(item) })]);
      fig.addEventListener("click", () => showDetail(run, item.index));
      grid.appendChild(fig);
    }
    $("cluster-pager").hidden = m.length <= PAGE;
    $("cluster-info").textContent = ` ${o + 1}-${o + ids.length} of ${m.length} `;
    $("cluster-prev").disabled = o === 0;
    $("cluster-next").disabled = o + PAGE >= m.length;
  } catch (e) { status(e.message); }
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
  try {
    const res = await api("/api/concepts/channels", { run: c.name, layer: $("concepts-layer").value,
                                                      order: $("concepts-order").value });
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
  } catch (e) { status(e.message); }
}

async function loadExamples(channel) {
  const c = currentConcepts(), layer = $("concepts-layer").value, mode = $("concepts-mode").value;
  state.concepts.channel = channel;
  for (const b of document.querySelectorAll("#channels button")) b.classList.toggle("active", +b.dataset.channel === channel);
  try {
    const res = await api("/api/concepts/examples", { run: c.name, layer: layer, channel: channel, mode: mode });
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
  } catch (e) { status(e.message); }
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
                                                           $("cluster-grid").innerHTML = ""; });
  $("cluster-prev").addEventListener("click", () => { state.spray.offset -= PAGE; loadClusterPage(); });
  $("cluster-next").addEventListener("click", () => { state.spray.offset += PAGE; loadClusterPage(); });
  $("concepts-run").addEventListener("change", () => { fillLayers(); loadChannels(); });
  $("concepts-layer").addEventListener("change", () => { state.concepts.channel = null; loadChannels(); });
  $("concepts-order").addEventListener("change", loadChannels);
  $("concepts-mode").addEventListener("change", () => loadExamples(state.concepts.channel));
  if (tabs.spray) fillSpray();
  if (tabs.concepts) fillConcepts();
  if (tabs.samples) {
    fillGroups();
    await loadPage();
  } else {
    showTab(tabs.spray ? "spray" : "concepts");
  }
  document.body.dataset.ready = "1";
}

start();
