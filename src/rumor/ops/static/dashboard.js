// rumor dashboard: renders the snapshots a rumor process broadcasts over /ws. The first one is fetched over
// HTTP (/api/dashboard), and so are later ones while the WebSocket is not open: a page behind a proxy that
// refuses WebSockets, or a headless browser that never opens one, still shows the network.
// Plain JavaScript and SVG, no build step and no library. Two views share this page:
//   "network" (rumor network up): every peer polled, buttons to stop/start peers and pause the load;
//   "peer" (a peer's operations endpoint): that peer's own view of the membership.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const ORG_COLORS = ["#3b7dd8", "#d9822b", "#2e9d8f", "#9b59b6", "#c0392b", "#7f8c2d", "#d35d9b", "#5d6d7e"];
const MAX_EVENTS = 300;
const TRAFFIC_POINTS = 600;
const TRAFFIC_WINDOW = 120; // seconds shown

const state = {
  snapshot: null,
  events: [],
  eventKeys: new Set(),
  orgColors: new Map(),
  channel: null,
  traffic: [],
  pending: new Set(),
  live: false, // the WebSocket is open
};

function $(id) { return document.getElementById(id); }

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function orgColor(org) {
  if (!state.orgColors.has(org)) state.orgColors.set(org, ORG_COLORS[state.orgColors.size % ORG_COLORS.length]);
  return state.orgColors.get(org);
}

function shortName(id) {
  // peer0.org1.example.com -> peer0.org1; an endpoint stays as it is
  const parts = id.split(".");
  return parts.length > 2 && !/^\d+$/.test(parts[0]) ? parts.slice(0, 2).join(".") : id;
}

function fmtRate(x) {
  if (x === undefined || x === null) return "–";
  if (x >= 1e6) return (x / 1e6).toFixed(1) + "M";
  if (x >= 1e3) return (x / 1e3).toFixed(1) + "k";
  return x.toFixed(x < 10 ? 1 : 0);
}

// A duration in milliseconds: "41 ms" under a second (tenths of a second would say 0.0 s for most blocks).
function fmtDuration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function fmtTime(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0").slice(0, 1);
}

// --- the WebSocket -----------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const base = location.pathname.replace(/[^/]*$/, "");
  const ws = new WebSocket(`${scheme}://${location.host}${base}ws`);
  ws.onopen = () => { state.live = true; setConn("live", "live"); };
  ws.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    if (data.type === "snapshot") onSnapshot(data);
    else if (data.type === "events") onEvents(data.events);
  };
  ws.onclose = () => {
    state.live = false;
    setConn("connecting", "reconnecting…");
    setTimeout(connect, 1000);
  };
}

// One snapshot over plain HTTP, with the recent events and the traffic history.
async function fetchSnapshot() {
  try {
    const resp = await fetch("api/dashboard", { cache: "no-store" });
    if (!resp.ok) return;
    const snap = await resp.json();
    if (state.live) return; // the WebSocket is quicker and already said as much
    onSnapshot(snap);
    setConn("polling", "HTTP snapshots (no live feed)");
  } catch (err) {
    // the server is away: the WebSocket's reconnecting badge says so
  }
}

// While the WebSocket is not open, poll over HTTP at the dashboard's own pace (at most once a second).
async function pollWithoutWebSocket() {
  if (!state.live) await fetchSnapshot();
  const every = Math.max(1000, state.snapshot ? state.snapshot.poll_interval_ms : 1000);
  setTimeout(pollWithoutWebSocket, every);
}

function setConn(cls, text) {
  const c = $("conn");
  c.className = "conn " + cls;
  c.textContent = text;
}

function onSnapshot(snap) {
  // An HTTP answer may arrive after a newer snapshot came over the WebSocket: drawing it would go back in time.
  if (state.snapshot && snap.time < state.snapshot.time) return;
  if (snap.events && snap.events.length) onEvents(snap.events);
  state.snapshot = snap;
  document.body.dataset.view = snap.view;
  $("title").textContent = snap.view === "network" ? `${snap.title} · network view` : `${snap.title} · its view`;
  if (!state.channel || !snap.channels.includes(state.channel)) state.channel = snap.channels[0] || null;
  if (Array.isArray(snap.traffic_history)) {
    // The first state (and every HTTP snapshot) carries the last minutes: the chart is full from the start.
    state.traffic = snap.traffic_history.slice(-TRAFFIC_POINTS);
  } else if (snap.traffic && (!state.traffic.length || snap.traffic.t > state.traffic[state.traffic.length - 1].t)) {
    state.traffic.push(snap.traffic);
  }
  while (state.traffic.length > TRAFFIC_POINTS) state.traffic.shift();
  renderLoad(snap);
  renderOrdering(snap);
  renderGraph(snap);
  renderPeers(snap);
  renderLatency(snap);
  $("traffic-hint").textContent = snap.view === "network" ? "all peers, last 2 min" : "this peer, last 2 min";
  renderTraffic();
}

function onEvents(events) {
  for (const e of events) {
    const key = `${e.time}|${e.event}|${e.text}`;
    if (state.eventKeys.has(key)) continue;
    state.eventKeys.add(key);
    state.events.push(e);
  }
  state.events.sort((a, b) => a.time - b.time);
  while (state.events.length > MAX_EVENTS) state.events.shift();
  renderEvents();
}

// --- header: the load generator ----------------------------------------------------------------

function renderLoad(snap) {
  const box = $("load");
  if (!snap.load) { box.hidden = true; return; }
  box.hidden = false;
  const l = snap.load;
  let text;
  if (!(l.rate > 0)) text = "no load generator (--rate 0)";
  else if (l.paused) text = `load paused (${l.rate} block/s when resumed) · ${l.blocks} blocks submitted`;
  else text = `load ${l.rate} block/s · ${l.blocks} blocks submitted`;
  if (l.error) text += ` · ${l.error}`;
  $("load-text").textContent = text;
  box.dataset.paused = l.paused ? "1" : "0";
  const button = $("load-toggle");
  button.hidden = !(l.rate > 0);
  button.textContent = l.paused ? "Resume load" : "Pause load";
  button.dataset.paused = l.paused ? "1" : "0";
}

$("load-toggle").addEventListener("click", async (ev) => {
  const button = ev.currentTarget;
  button.disabled = true;
  try {
    await fetch(`api/load/${button.dataset.paused === "1" ? "resume" : "pause"}`, { method: "POST" });
  } finally {
    button.disabled = false;
  }
});

// --- the ordering service: orderers, the cutter of each channel, etcd's health -----------------

function renderOrdering(snap) {
  const card = $("ordering-card");
  const o = snap.ordering;
  if (!o) { card.hidden = true; return; }
  card.hidden = false;
  const cutters = Object.entries(o.cutters || {}).map(([ch, node]) => `${ch}: ${node || "none"}`).join(" · ");
  $("ordering-hint").textContent = `${o.consensus}` + (cutters ? ` · cutter ${cutters}` : "") +
    (o.error ? ` · ${o.error}` : "");
  const rows = [];
  for (const n of o.orderers || []) {
    const cuts = Object.entries(o.cutters || {}).filter(([, node]) => node === n.id).map(([ch]) => ch);
    const heights = Object.entries(n.stored || {}).map(([ch, h]) => `${ch} height ${h}`).join(", ");
    const stateText = [cuts.length ? `cuts ${cuts.join(", ")}` : "", heights].filter(Boolean).join(" · ");
    rows.push(el("tr", { class: cuts.length ? "cutter" : "", "data-orderer": n.id }, undefined));
    rows[rows.length - 1].replaceChildren(
      el("td", {}, n.id), el("td", {}, "orderer"), el("td", {}, n.endpoint),
      el("td", {}, n.process || ""), el("td", {}, stateText));
  }
  for (const m of o.etcd || []) {
    const health = m.healthy ? (m.leader ? "healthy · raft leader" : "healthy") : `down${m.error ? ": " + m.error : ""}`;
    const size = m.db_size ? ` · db ${(m.db_size / 1048576).toFixed(1)} MiB` : "";
    const tr = el("tr", { class: m.healthy ? "" : "down", "data-etcd": m.name }, undefined);
    tr.replaceChildren(el("td", {}, m.name), el("td", {}, "etcd"), el("td", {}, m.endpoint),
      el("td", {}, m.process || ""), el("td", {}, health + size));
    rows.push(tr);
  }
  $("ordering-body").replaceChildren(...rows);
}

// --- the membership graph ----------------------------------------------------------------------

function layout(nodes) {
  // Nodes on a circle, grouped by org, one empty slot between orgs.
  const W = 640, H = 460, cx = W / 2, cy = H / 2 + 6, r = Math.min(W, H) / 2 - 70;
  const orgs = [...new Set(nodes.map((n) => n.org))];
  const slots = nodes.length + (orgs.length > 1 ? orgs.length : 0);
  const pos = new Map();
  let slot = 0, prevOrg = null;
  const orgAngles = new Map();
  for (const n of nodes) {
    if (prevOrg !== null && n.org !== prevOrg && orgs.length > 1) slot += 1;
    prevOrg = n.org;
    const a = -Math.PI / 2 + (2 * Math.PI * slot) / Math.max(slots, 1);
    pos.set(n.key, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a), a });
    if (!orgAngles.has(n.org)) orgAngles.set(n.org, []);
    orgAngles.get(n.org).push(a);
    slot += 1;
  }
  return { pos, orgAngles, cx, cy, r };
}

function renderGraph(snap) {
  const svg = $("graph");
  svg.replaceChildren();
  const nodes = snap.nodes;
  const { pos, orgAngles, cx, cy, r } = layout(nodes);
  $("graph-hint").textContent = snap.view === "network"
    ? "every peer polled; ★ leads its org; edges are open connections"
    : "as this peer sees it (bold outline); edges are its open connections";

  for (const [org, angles] of orgAngles) {
    const a = angles.reduce((s, x) => s + x, 0) / angles.length;
    const t = el("svg:text", {
      class: "org-label", x: cx + (r + 48) * Math.cos(a), y: cy + (r + 48) * Math.sin(a),
      "text-anchor": "middle", fill: orgColor(org),
    }, org || "?");
    svg.appendChild(t);
  }
  for (const [a, b] of snap.edges) {
    const p = pos.get(a), q = pos.get(b);
    if (!p || !q) continue;
    svg.appendChild(el("svg:line", { class: "edge", x1: p.x, y1: p.y, x2: q.x, y2: q.y }));
  }
  for (const n of nodes) {
    const p = pos.get(n.key);
    const leader = n.leader.length > 0;
    const cls = ["node", n.state, n.observed && snap.view === "peer" ? "self" : "", leader ? "leader" : ""];
    const g = el("svg:g", {
      class: cls.filter(Boolean).join(" "), "data-peer": n.id, "data-state": n.state,
      "data-leader": leader ? "1" : "0", transform: `translate(${p.x},${p.y})`,
    });
    const tip = [`${n.id} (${n.org})`, n.endpoint, n.state === "dead" ? `dead: ${n.reason || ""}` : "alive"];
    if (leader) tip.push(`leader of ${n.org} on ${n.leader.join(", ")}`);
    if (n.dead_votes) tip.push(`declared dead by ${n.dead_votes} peer(s)`);
    g.appendChild(el("svg:title", {}, tip.join("\n")));
    if (leader) g.appendChild(el("svg:circle", { class: "ring", r: 22 }));
    g.appendChild(el("svg:circle", { class: "body", r: 17, fill: orgColor(n.org) }));
    if (n.state === "dead") {
      g.appendChild(el("svg:path", { class: "cross", d: "M-8,-8 L8,8 M8,-8 L-8,8" }));
    }
    if (leader) g.appendChild(el("svg:text", { class: "crown", x: 13, y: -15 }, "★"));
    const outward = Math.cos(p.a) < -0.3 ? "end" : Math.cos(p.a) > 0.3 ? "start" : "middle";
    const lx = 30 * Math.cos(p.a), up = Math.sin(p.a) < -0.3;
    const ly = 30 * Math.sin(p.a) + (up ? -10 : 4);
    g.appendChild(el("svg:text", { class: "label", x: lx, y: ly, "text-anchor": outward }, shortName(n.id)));
    const h = state.channel && n.heights ? n.heights[state.channel] : undefined;
    // A member known only from the membership is named by its peer id where its certificate says it; where
    // it listens goes below, as its height does for a peer that is polled.
    const where = n.endpoint && n.endpoint !== n.id ? n.endpoint : "";
    const second = h !== undefined ? `height ${h}` : n.state === "dead" ? n.reason || "dead" : where;
    if (second) {
      g.appendChild(el("svg:text", { class: "label sub", x: lx, y: ly + 13, "text-anchor": outward }, second));
    }
    svg.appendChild(g);
  }

  const legend = $("legend");
  legend.replaceChildren();
  for (const org of orgAngles.keys()) {
    const item = el("span");
    item.appendChild(el("span", { class: "swatch", style: `background:${orgColor(org)}` }));
    item.appendChild(document.createTextNode(org));
    legend.appendChild(item);
  }
  const alive = nodes.filter((n) => n.state === "alive").length;
  legend.appendChild(el("span", {}, `${alive}/${nodes.length} alive · ★ org leader · ✕ dead`));
}

// --- the peers table ---------------------------------------------------------------------------

// The table is updated in place, row by row and cell by cell: a button that was replaced between the press
// and the release of the mouse would swallow the click.
const rows = new Map(); // peer id -> {tr, cells}
let tableColumns = "";

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  if (value === null || value === undefined || value === false) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, value);
  }
}

function newRow(snap) {
  const tr = el("tr");
  const cells = {};
  const add = (key, attrs = {}) => { cells[key] = el("td", attrs); tr.appendChild(cells[key]); return cells[key]; };
  add("state").appendChild(el("span", { class: "dot" }));
  const name = add("name");
  name.appendChild(el("span", { class: "peer-name" }));
  name.appendChild(el("span", { class: "endpoint" }));
  const org = add("org");
  org.appendChild(el("span", { class: "org-chip" }));
  org.appendChild(el("span", { class: "org-name" }));
  add("leads");
  for (const c of snap.channels) {
    const td = add(`h:${c}`, { class: "num height", "data-channel": c });
    td.appendChild(el("span", { class: "value" }));
    td.appendChild(el("span", { class: "bar" }));
  }
  for (const k of ["msg_out", "msg_in", "bytes_out", "bytes_in", "conns"]) add(k, { class: "num" });
  if (snap.controllable) {
    add("process");
    add("action").appendChild(el("button", { type: "button" }));
  }
  return { tr, cells };
}

function renderPeers(snap) {
  const cols = ["", "peer", "org", "leads", ...snap.channels.map((c) => `height ${c}`),
    "msg/s out", "msg/s in", "bytes/s out", "bytes/s in", "conns"];
  if (snap.controllable) cols.push("process", "");
  const body = $("peers-body");
  if (cols.join("|") !== tableColumns) {
    tableColumns = cols.join("|");
    $("peers-head").replaceChildren(...cols.map((c) => el("th", {}, c)));
    body.replaceChildren();
    rows.clear();
  }
  const maxHeight = {};
  for (const c of snap.channels) maxHeight[c] = Math.max(1, ...snap.nodes.map((n) => (n.heights || {})[c] || 0));
  const shown = snap.nodes.filter((n) => !(snap.view === "network" && !n.observed));
  const ids = new Set(shown.map((n) => n.id));
  for (const [id, row] of rows) {
    if (!ids.has(id)) { row.tr.remove(); rows.delete(id); }
  }
  shown.forEach((n, index) => {
    let row = rows.get(n.id);
    if (!row) { row = newRow(snap); rows.set(n.id, row); }
    const { tr, cells } = row;
    if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
    setAttr(tr, "class", n.state);
    setAttr(tr, "data-peer", n.id);
    setAttr(tr, "data-state", n.state);
    const dot = cells.state.firstChild;
    setAttr(dot, "class", `dot ${n.state}`);
    setAttr(dot, "title", n.state === "dead" ? n.reason : "alive");
    setText(cells.name.firstChild, n.id);
    setText(cells.name.lastChild, n.endpoint && n.endpoint !== n.id ? n.endpoint : "");
    setAttr(cells.name, "title", n.pki_id ? `PKI-ID ${n.pki_id}` : null);
    setAttr(cells.org.firstChild, "style", `background:${orgColor(n.org)}`);
    setText(cells.org.lastChild, n.org);
    setAttr(cells.leads, "class", n.leader.length ? "leader-badge" : null);
    setText(cells.leads, n.leader.length ? "★ " + n.leader.join(", ") : "");
    for (const c of snap.channels) {
      const td = cells[`h:${c}`];
      const h = (n.heights || {})[c];
      setText(td.firstChild, h === undefined ? "–" : String(h));
      setAttr(td.lastChild, "style", h === undefined ? "display:none" : `width:${Math.round((60 * h) / maxHeight[c])}px`);
    }
    const rates = n.rates || {};
    for (const k of ["msg_out", "msg_in", "bytes_out", "bytes_in"]) {
      setText(cells[k], n.state === "alive" ? fmtRate(rates[k]) : "–");
    }
    setText(cells.conns, n.connections === undefined ? "–" : String(n.connections));
    if (snap.controllable) {
      setText(cells.process, n.process || "");
      const b = cells.action.firstChild;
      const running = n.process === "running" || n.process === "starting";
      const action = running ? "stop" : "start";
      setAttr(b, "class", action);
      setAttr(b, "data-action", action);
      setAttr(b, "data-peer", n.control_id);
      setText(b, running ? "Stop" : "Start");
      b.hidden = !n.control_id;
      b.disabled = state.pending.has(n.control_id) || n.process === "starting" || n.process === "stopping";
    }
  });
}

$("peers-body").addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-action]");
  if (b && !b.disabled) peerAction(b.dataset.peer, b.dataset.action);
});

async function peerAction(name, action) {
  state.pending.add(name);
  if (state.snapshot) renderPeers(state.snapshot);
  try {
    const resp = await fetch(`api/peers/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      onEvents([{ time: Date.now() / 1000, event: "error", text: body.error || `${action} ${name}: HTTP ${resp.status}` }]);
    }
  } finally {
    state.pending.delete(name);
  }
}

// --- block propagation latency -----------------------------------------------------------------

// The smallest value of the 1-2-5 sequence (1, 2, 5, 10, 20, ...) that is at least / more than x (x > 0).
function niceAtLeast(x) {
  let p = Math.pow(10, Math.floor(Math.log10(x)));
  for (;;) {
    for (const m of [1, 2, 5]) if (m * p >= x - 1e-9) return m * p;
    p *= 10;
  }
}
function niceAbove(x) { return niceAtLeast(x * (1 + 1e-9) + 1e-9); }
function niceAtMost(x) { // the largest 1-2-5 value ≤ x
  const n = niceAtLeast(x);
  if (n <= x + 1e-9) return n;
  const p = Math.pow(10, Math.floor(Math.log10(n)));
  const m = Math.round(n / p);
  return m === 1 ? p / 2 : m === 2 ? p : 2 * p;
}

// The histogram's bins, scaled to the samples (ms): linear bins of a round width while the samples are of one
// magnitude; once the slowest is ten times the median (a 10 s failover stall among 40 ms hops), bins on a log
// axis, 1-2-5 per decade, so that both can be read. ``resolution`` is the finest step a sample has (the poll
// interval when polled). Returns {logScale, bins: [{lo, hi, count}]}; the bins cover every sample.
function latencyBins(samples, resolution) {
  // A polled sample is a whole number of polls give or take the jitter of the polling: rounded to it, so that
  // 498 ms and 502 ms (both "one poll") fall into one bin rather than either side of the 500 ms edge.
  const quantized = resolution > 1 ? samples.map((s) => Math.round(s / resolution) * resolution) : samples;
  const sorted = [...quantized].sort((a, b) => a - b);
  const min = sorted[0], max = sorted[sorted.length - 1], median = sorted[Math.floor(sorted.length / 2)];
  const logScale = max > 10 * Math.max(median, resolution);
  const edges = [];
  if (logScale) {
    const first = niceAtMost(Math.max(min, resolution, 1));
    if (min < first) edges.push(0); // zeros (and samples under the resolution) get a bin of their own
    for (let e = first; edges[edges.length - 1] === undefined || edges[edges.length - 1] <= max; e = niceAbove(e)) {
      edges.push(e);
    }
  } else {
    const step = niceAtLeast(Math.max(resolution, (max - min) / 12, 1));
    for (let e = Math.floor(min / step) * step; edges.length < 2 || edges[edges.length - 1] <= max; e += step) {
      edges.push(e);
    }
  }
  const bins = [];
  for (let i = 0; i + 1 < edges.length; i++) bins.push({ lo: edges[i], hi: edges[i + 1], count: 0 });
  let b = 0;
  for (const s of sorted) {
    while (b < bins.length - 1 && s >= bins[b].hi) b += 1;
    bins[b].count += 1;
  }
  return { logScale, bins };
}

// A bin edge on the axis: short, as there may be a dozen.
function fmtTick(ms) {
  return ms < 1000 ? `${ms}ms` : `${+(ms / 1000).toFixed(1)}s`;
}

function renderLatency(snap) {
  const controls = $("latency-controls");
  if (snap.channels.length > 1 && controls.childElementCount === 0) {
    const select = el("select", { id: "latency-channel" });
    for (const c of snap.channels) select.appendChild(el("option", { value: c }, c));
    select.addEventListener("change", () => { state.channel = select.value; renderLatency(state.snapshot); });
    controls.appendChild(select);
  }
  const svg = $("latency");
  svg.replaceChildren();
  const info = state.channel ? snap.latency[state.channel] : null;
  const samples = info ? info.samples_ms : [];
  const text = $("latency-text");
  // top leaves room for the count above the tallest bar; left and right for half of the outer edge labels
  const W = 420, H = 190, left = 16, right = 16, bottom = 22, top = 16;
  svg.appendChild(el("svg:line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
  if (snap.view === "peer") {
    svg.appendChild(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "needs the network view"));
    text.textContent = "A single peer sees only its own ledger: the time for a block to reach every peer is " +
      "measured by the dashboard of rumor network up, which polls them all.";
    return;
  }
  if (!samples.length) {
    svg.appendChild(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no block measured yet"));
    text.textContent = `Blocks that appear from now on are measured, at the poll interval (${snap.poll_interval_ms} ms).`;
    return;
  }
  const resolution = info.exact ? 1 : snap.poll_interval_ms;
  const { logScale, bins } = latencyBins(samples, resolution);
  svg.dataset.scale = logScale ? "log" : "linear";
  const peak = Math.max(...bins.map((b) => b.count));
  const bw = (W - left - right) / bins.length;
  bins.forEach((bin, i) => {
    const h = ((H - bottom - top) * bin.count) / peak;
    const x = left + i * bw;
    const rect = el("svg:rect", {
      class: "bar-rect", x: x + 1.5, y: H - bottom - h, width: Math.max(1, bw - 3), height: h,
      "data-lo": bin.lo, "data-hi": bin.hi, "data-count": bin.count,
    });
    rect.appendChild(el("svg:title", {}, `${fmtDuration(bin.lo)} to ${fmtDuration(bin.hi)}: ${bin.count} block(s)`));
    svg.appendChild(rect);
    if (bin.count) {
      svg.appendChild(el("svg:text", {
        class: "count", x: x + bw / 2, y: H - bottom - h - 3, "text-anchor": "middle",
      }, String(bin.count)));
    }
  });
  // Edge labels left to right, each kept only where it clears the one before (measured, as the font decides);
  // the last edge is always labelled, at the cost of its neighbour, so that the axis says how far it goes.
  const ticks = bins.map((b) => b.lo).concat([bins[bins.length - 1].hi]);
  const placed = [];
  ticks.forEach((ms, i) => {
    const t = el("svg:text", { class: "tick", x: left + i * bw, y: H - 8, "text-anchor": "middle" }, fmtTick(ms));
    svg.appendChild(t);
    const box = t.getBBox();
    placed.push({ t, lo: box.x, hi: box.x + box.width });
  });
  const gap = 3;
  let keptEnd = -Infinity;
  const last = placed[placed.length - 1];
  for (const p of placed) {
    const clearsNext = p === last || p.hi + gap <= last.lo;
    if (p.lo >= keptEnd + gap && clearsNext) keptEnd = p.hi;
    else if (p !== last) p.t.remove();
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
  text.textContent = `${samples.length} recent blocks on ${state.channel}: median ${fmtDuration(q(0.5))}, ` +
    `p90 ${fmtDuration(q(0.9))}, max ${fmtDuration(sorted[sorted.length - 1])}` +
    (info.incomplete ? `, ${info.incomplete} never reached every peer` : "") +
    (logScale ? ". Bins on a log scale (each about twice the one before), as the slowest blocks took ten times the median" : "") +
    (info.exact
      ? ". From the peers' own commit timestamps: last commit minus first."
      : `. Resolution: the poll interval (${snap.poll_interval_ms} ms): from the first poll that saw a peer ` +
        "holding the block to the first that saw every reachable peer holding it; a bar from 0 means within " +
        "one poll.");
}

// --- traffic over time -------------------------------------------------------------------------

function renderTraffic() {
  const svg = $("traffic");
  svg.replaceChildren();
  const W = 420, H = 110, left = 4, bottom = 14;
  svg.appendChild(el("svg:line", { class: "axis", x1: left, y1: H - bottom, x2: W, y2: H - bottom }));
  const pts = state.traffic;
  if (pts.length < 2) return;
  const maxMsgs = Math.max(1, ...pts.map((p) => p.msgs));
  const maxBytes = Math.max(1, ...pts.map((p) => p.bytes));
  const newest = pts[pts.length - 1].t;
  const x = (t) => W - ((W - left) * (newest - t)) / TRAFFIC_WINDOW;
  const y = (v, max) => H - bottom - ((H - bottom - 6) * v) / max;
  // A peer's own dashboard polls only while a page is open: its history has holes, drawn as holes.
  const hole = 3 * Math.max(1, state.snapshot ? state.snapshot.poll_interval_ms / 1000 : 1);
  const shown = pts.filter((p) => newest - p.t <= TRAFFIC_WINDOW);
  const line = (key, max) => shown
    .map((p, i) => `${i && p.t - shown[i - 1].t <= hole ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key], max).toFixed(1)}`)
    .join(" ");
  svg.appendChild(el("svg:text", { x: left, y: H - 2 }, `-${TRAFFIC_WINDOW}s`));
  svg.appendChild(el("svg:text", { x: W - 2, y: H - 2, "text-anchor": "end" }, "now"));
  svg.appendChild(el("svg:path", { class: "msgs", d: line("msgs", maxMsgs), "data-points": shown.length }));
  svg.appendChild(el("svg:path", { class: "bytes", d: line("bytes", maxBytes) }));
  const now = pts[pts.length - 1];
  $("traffic-text").textContent = `now ${fmtRate(now.msgs)} messages/s (solid, peak ${fmtRate(maxMsgs)}) and ` +
    `${fmtRate(now.bytes)} bytes/s (dashed, peak ${fmtRate(maxBytes)}) sent${state.snapshot && state.snapshot.view === "peer" ? " by this peer" : " by all peers; per peer in the table"}.`;
}

// --- the event log -----------------------------------------------------------------------------

function renderEvents() {
  const list = $("events");
  list.replaceChildren();
  for (let i = state.events.length - 1; i >= 0; i--) {
    const e = state.events[i];
    const li = el("li", { "data-event": e.event });
    li.appendChild(el("span", { class: "time" }, fmtTime(e.time)));
    li.appendChild(el("span", { class: `kind ${e.event}` }, e.event.replace(/_/g, " ")));
    li.appendChild(document.createTextNode(e.text || ""));
    if (e.last_log) {
      // apart from what happened: a log line is long, and it is the process's words, not the dashboard's
      const last = el("div", { class: "last-log" }, "last log line: ");
      last.appendChild(el("code", {}, e.last_log));
      li.appendChild(last);
    }
    list.appendChild(li);
  }
}

pollWithoutWebSocket();
connect();
