// featurekit lineage widget: an anywidget ES module (no imports, no network).
// Model traits: graph (LineageGraph.to_dict()), details ({node id: panel}), selected,
// expanded (show column-level nodes), highlight ("both" | "upstream" | "downstream" | "none"),
// height (px). The same module runs in Jupyter (anywidget) and in featurekit's offline HTML export.

const ORDER = { source: 0, column: 1, view: 2, feature: 3, training_set: 4, model: 5 };
const COLORS = {
  source: "#dbeafe", column: "#eff6ff", view: "#dcfce7",
  feature: "#f0fdf4", training_set: "#fef9c3", model: "#fce7f3",
};
const LABELS = {
  source: "source", column: "column", view: "view",
  feature: "feature", training_set: "training set", model: "model",
};
const COLUMN_LEVEL = new Set(["column", "feature"]);
const NODE_W = 190, NODE_H = 36, GAP_X = 56, GAP_Y = 12, PAD = 14;
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

function html(tag, attrs, parent, text) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  if (parent) parent.appendChild(el);
  return el;
}

function shorten(text, max) {
  return text.length <= max ? text : text.slice(0, max - 1) + "\u2026";
}

// Which nodes and edges are drawn: datasets only, or column level too.
export function visibleGraph(graph, expanded) {
  const nodes = (graph.nodes || []).filter((n) => expanded || !COLUMN_LEVEL.has(n.kind));
  const ids = new Set(nodes.map((n) => n.id));
  const seen = new Set();
  const edges = [];
  for (const e of graph.edges || []) {
    if (!ids.has(e.source) || !ids.has(e.target)) continue;
    const key = e.source + "\u0000" + e.target;
    if (seen.has(key)) continue; // one drawn line per pair of nodes
    seen.add(key);
    edges.push(e);
  }
  return { nodes, edges };
}

// Left-to-right layers: longest path from the roots (sources end up left, models right),
// ordered inside a layer by kind, then by the mean position of their inputs.
export function layout(nodes, edges) {
  const incoming = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) incoming.get(e.target).push(e.source);
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot happen in lineage; stay safe anyway
    visiting.add(id);
    let d = 0;
    for (const src of incoming.get(id)) d = Math.max(d, depth(src) + 1);
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  nodes.forEach((n) => depth(n.id));
  const columns = new Map();
  for (const n of nodes) {
    const d = layer.get(n.id);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(n);
  }
  const pos = new Map();
  const indexOf = new Map();
  for (const d of [...columns.keys()].sort((a, b) => a - b)) {
    const col = columns.get(d);
    const weight = (n) => {
      const ins = incoming.get(n.id).filter((s) => indexOf.has(s));
      return ins.length ? ins.reduce((a, s) => a + indexOf.get(s), 0) / ins.length : 0;
    };
    col.sort((a, b) =>
      (ORDER[a.kind] ?? 9) - (ORDER[b.kind] ?? 9) || weight(a) - weight(b) || (a.id < b.id ? -1 : 1));
    col.forEach((n, i) => {
      indexOf.set(n.id, i);
      pos.set(n.id, { x: PAD + d * (NODE_W + GAP_X), y: PAD + i * (NODE_H + GAP_Y) });
    });
  }
  const width = PAD * 2 + Math.max(1, columns.size) * (NODE_W + GAP_X) - GAP_X;
  const tallest = Math.max(1, ...[...columns.values()].map((c) => c.length));
  const height = PAD * 2 + tallest * (NODE_H + GAP_Y) - GAP_Y;
  return { pos, width, height };
}

// Everything upstream and/or downstream of ``start`` along the drawn edges.
export function reach(edges, start, direction) {
  const out = new Set([start]);
  const walk = (up) => {
    const queue = [start];
    const seen = new Set([start]);
    while (queue.length) {
      const cur = queue.shift();
      for (const e of edges) {
        const [from, to] = up ? [e.target, e.source] : [e.source, e.target];
        if (from === cur && !seen.has(to)) {
          seen.add(to);
          out.add(to);
          queue.push(to);
        }
      }
    }
  };
  if (direction === "both" || direction === "upstream") walk(true);
  if (direction === "both" || direction === "downstream") walk(false);
  return out;
}

function nodeLabel(n) {
  if (n.kind === "column" || n.kind === "feature") return n.column || n.id;
  if (n.kind === "training_set") return n.name;
  return n.name + (n.version ? "@" + n.version : "");
}

function renderDetails(panel, model) {
  panel.replaceChildren();
  const graph = model.get("graph") || {};
  const id = model.get("selected");
  const node = (graph.nodes || []).find((n) => n.id === id);
  if (!node) {
    html("div", { class: "fk-empty" }, panel, "Click a node to see its details.");
    return;
  }
  const info = (model.get("details") || {})[id] || { rows: [], lists: [] };
  html("div", { class: "fk-kind" }, panel, LABELS[node.kind] || node.kind);
  html("h4", { "data-testid": "details-title" }, panel, node.id);
  const table = html("table", {}, panel);
  for (const [label, value] of info.rows || []) {
    const tr = html("tr", {}, table);
    html("td", {}, tr, label);
    html("td", {}, tr, String(value));
  }
  for (const [title, items] of info.lists || []) {
    html("div", { class: "fk-section" }, panel, title);
    if (!items.length) {
      html("div", { class: "fk-empty" }, panel, "none");
      continue;
    }
    const ul = html("ul", {}, panel);
    for (const item of items) html("li", {}, ul, item);
  }
}

function renderGraph(canvas, model) {
  canvas.replaceChildren();
  const graph = model.get("graph") || { nodes: [], edges: [] };
  const { nodes, edges } = visibleGraph(graph, model.get("expanded"));
  const { pos, width, height } = layout(nodes, edges);
  const root = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `lineage graph with ${nodes.length} nodes`,
  }, canvas);
  const selected = model.get("selected");
  const direction = model.get("highlight") || "both";
  const lit = selected && pos.has(selected) && direction !== "none"
    ? reach(edges, selected, direction) : null;
  const edgeLayer = svg("g", {}, root);
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    const classes = ["fk-edge"];
    if (e.transformation === "INDIRECT" || e.transformation === "UNKNOWN") classes.push("fk-indirect");
    if (lit) classes.push(lit.has(e.source) && lit.has(e.target) ? "fk-on" : "fk-dim");
    const path = svg("path", {
      d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: classes.join(" "),
    }, edgeLayer);
    const title = e.kind === "derives" ? `${e.kind} ${e.transformation || ""}`.trim() : e.kind;
    svg("title", {}, path).textContent = `${e.source} \u2192 ${e.target} (${title})`;
  }
  const nodeLayer = svg("g", {}, root);
  for (const n of nodes) {
    const p = pos.get(n.id);
    const classes = ["fk-node", "fk-kind-" + n.kind];
    if (n.id === graph.focus) classes.push("fk-focus");
    if (n.id === selected) classes.push("fk-selected");
    if (lit && !lit.has(n.id)) classes.push("fk-dim");
    const g = svg("g", {
      class: classes.join(" "), "data-id": n.id, "data-kind": n.kind,
      transform: `translate(${p.x},${p.y})`, tabindex: 0,
    }, nodeLayer);
    svg("title", {}, g).textContent = n.id;
    svg("rect", { width: NODE_W, height: NODE_H, rx: 6, fill: COLORS[n.kind] || "#ffffff" }, g);
    svg("text", { x: 8, y: 15 }, g).textContent = shorten(nodeLabel(n), 30);
    const sub = n.kind === "column" || n.kind === "feature"
      ? `${LABELS[n.kind]} of ${n.name}${n.version ? "@" + shorten(n.version, 12) : ""}`
      : LABELS[n.kind] || n.kind;
    svg("text", { x: 8, y: 29, class: "fk-sub" }, g).textContent = shorten(sub, 36);
    const choose = () => {
      model.set("selected", n.id === model.get("selected") ? "" : n.id);
      model.save_changes();
    };
    g.addEventListener("click", choose);
    g.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); choose(); }
    });
  }
}

function render({ model, el }) {
  const box = html("div", { class: "fk-lineage" }, el);
  const bar = html("div", { class: "fk-toolbar" }, box);
  html("span", { class: "fk-title" }, bar, "featurekit lineage");
  const toggle = html("button", { type: "button", "data-testid": "toggle-columns" }, bar);
  const select = html("select", { "data-testid": "highlight", title: "highlight the path of the selected node" }, bar);
  for (const [value, text] of [["both", "path: up + down"], ["upstream", "path: upstream"],
    ["downstream", "path: downstream"], ["none", "path: off"]]) {
    html("option", { value }, select, text);
  }
  const counter = html("span", { class: "fk-count", "data-testid": "node-count" }, bar);
  const legend = html("div", { class: "fk-legend" }, bar);
  for (const kind of Object.keys(ORDER)) {
    const item = html("span", {}, legend);
    html("i", { style: `background:${COLORS[kind]}` }, item);
    item.appendChild(document.createTextNode(LABELS[kind]));
  }
  const body = html("div", { class: "fk-body" }, box);
  const canvas = html("div", { class: "fk-canvas" }, body);
  const panel = html("div", { class: "fk-details", "data-testid": "details" }, body);

  const refresh = () => {
    const expanded = !!model.get("expanded");
    toggle.textContent = expanded ? "hide columns" : "show columns";
    toggle.setAttribute("aria-pressed", String(expanded));
    select.value = model.get("highlight") || "both";
    renderGraph(canvas, model);
    // ``height`` is the most the widget takes; a small graph takes less (never below 260px)
    const drawing = canvas.querySelector("svg");
    const needed = (drawing ? Number(drawing.getAttribute("height")) : 0) + bar.offsetHeight + 20;
    box.style.height = Math.max(260, Math.min(model.get("height") || 440, needed)) + "px";
    const drawn = canvas.querySelectorAll(".fk-node").length;
    const total = (model.get("graph").nodes || []).length;
    counter.textContent = `${drawn} of ${total} nodes`;
    renderDetails(panel, model);
  };
  toggle.addEventListener("click", () => {
    model.set("expanded", !model.get("expanded"));
    model.save_changes();
  });
  select.addEventListener("change", () => {
    model.set("highlight", select.value);
    model.save_changes();
  });
  const names = ["graph", "details", "selected", "expanded", "highlight", "height"];
  for (const name of names) model.on("change:" + name, refresh);
  refresh();
  return () => {
    for (const name of names) model.off("change:" + name, refresh);
  };
}

export default { render };
