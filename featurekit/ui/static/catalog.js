// featurekit catalog: a read-only page over the store's JSON API (./api/...). Plain ES
// module, no dependencies, nothing from the network. Every page is a hash route, so each
// one is a URL that can be shared:
//   #/                      views (and #/search/<text>: search results)
//   #/view/<name>[@<n>]     a view version;  .../diff/<a>/<b>: with the code diff open
//   #/feature/<view>[@<n>]/<feature>   the view page, that feature highlighted
//   #/lineage[/<node id>]   the lineage graph centred on a node
//   #/training-sets, #/training-set/<id>, #/models, #/model/<name>
import widget from "./lineage.js";

const main = document.getElementById("main");
const search = document.getElementById("q");
const KEY = "featurekit-api-key";
let index = null; // the search index, loaded once per page load

// ---- DOM helpers (text only: nothing from the store is ever parsed as HTML) ---------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const link = (href, text, attrs) => el("a", { href, ...(attrs || {}) }, text);
const notYet = (text) => el("p", { class: "notyet", "data-testid": "not-recorded" }, text || "not recorded yet");

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "none";
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  for (const [u, n] of units) if (seconds >= n && seconds % n === 0) return `${seconds / n}${u}`;
  if (seconds >= 3600) return `${(seconds / 3600).toFixed(1)}h`;
  return `${seconds}s`;
}
function age(seconds) {
  if (seconds < 120) return `${Math.round(seconds)}s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}
function tags(map) {
  return Object.entries(map || {}).map(([k, v]) => el("span", { class: "tag" }, `${k}: ${v}`));
}
function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}
function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}
function page(title, ...children) {
  document.title = `${title} - featurekit catalog`;
  main.replaceChildren(el("h1", {}, title), ...children.filter((c) => c !== null && c !== undefined && c !== ""));
}

// ---- the API (an API key, when the server asks for one, stays in this tab) -----------------
class ApiError extends Error {}
async function askKey() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key");
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      sessionStorage.setItem(KEY, input.value.trim());
      resolve();
    }, { once: true });
    dialog.showModal();
  });
}
async function api(path, retried) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch("api/" + path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (response.status === 401 && !retried) {
    await askKey();
    return api(path, true);
  }
  const body = await response.json();
  if (!response.ok) throw new ApiError((body.error && body.error.message) || response.statusText);
  return body;
}
async function loadIndex() {
  if (!index) {
    index = await api("index");
    document.querySelector("[data-testid=store-name]").textContent = `store: ${index.store}`;
  }
  return index;
}

// ---- search ---------------------------------------------------------------------------------
// A feature matches when every word of the query is in its name or in its view's name,
// description, tags (key, value or key:value) or owner. Case does not matter.
export function matches(index, text) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  const out = [];
  for (const view of index.views) {
    const about = [view.name, view.description, view.owner,
      ...Object.entries(view.tags).flatMap(([k, v]) => [k, v, `${k}:${v}`, `${k}=${v}`])]
      .join("\n").toLowerCase();
    for (const feature of view.features) {
      const hay = about + "\n" + feature.name.toLowerCase();
      if (words.every((w) => hay.includes(w))) out.push({ view, feature });
    }
  }
  return out;
}

function resultsList(found) {
  const shown = found.slice(0, 200);
  const list = el("ul", { class: "results", id: "results", "data-testid": "results", "aria-label": "search results" },
    shown.map(({ view, feature }) => el("li", {},
      el("a", { href: `#/feature/${enc(view.name)}@${view.latest}/${enc(feature.name)}`, "data-result": "" },
        el("span", { class: "what" }, `${view.name}:${feature.name}`), " ",
        el("code", {}, feature.dtype), " ",
        el("span", { class: "muted" }, `v${view.latest} \u00b7 ${view.entity}`),
        view.owner ? el("span", { class: "muted" }, ` \u00b7 owner ${view.owner}`) : null, " ",
        tags(view.tags),
        view.description ? el("span", { class: "desc" }, view.description) : null))));
  const more = found.length > shown.length ? el("p", { class: "muted" }, `${found.length - shown.length} more: refine the search.`) : null;
  return [list, more];
}

async function showSearch(text) {
  const idx = await loadIndex();
  if (search.value !== text) search.value = text;
  const found = matches(idx, text);
  page(`Search: ${text}`,
    el("p", { role: "status", "data-testid": "result-count" }, `${found.length} feature${found.length === 1 ? "" : "s"} found`),
    ...resultsList(found));
}

async function showHome() {
  const idx = await loadIndex();
  search.value = "";
  const rows = idx.views.map((v) => [
    link(`#/view/${enc(v.name)}`, v.name), `v${v.latest}`, v.entity,
    String(v.features.length), v.owner, el("span", {}, tags(v.tags)), v.description]);
  page(`Feature views (${idx.views.length})`,
    el("p", { class: "muted" }, `${idx.training_sets.length} training sets, ${idx.models.length} models. Type in the search box to find a feature.`),
    table(["view", "latest", "entity", "features", "owner", "tags", "description"], rows, { "data-testid": "views" }));
}

// ---- a view ---------------------------------------------------------------------------------
async function showView(name, version, focus) {
  const q = version ? `?version=${version}` : "";
  const v = await api(`views/${enc(name)}${q}`);
  const base = `#/view/${enc(name)}`;
  const versions = table(["version", "registered", "why it changed", "code"], v.versions.map((r, i) => [
    r.version === v.version ? el("strong", {}, `v${r.version} (shown)`) : link(`${base}@${r.version}`, `v${r.version}`),
    when(r.created_at),
    r.reason.length ? r.reason.join(", ") : "first version",
    i === 0 ? (r.source_kept ? "" : "source not kept")
      : link(`${base}@${r.version}/diff/${v.versions[i - 1].version}/${r.version}`, `diff v${v.versions[i - 1].version} \u2192 v${r.version}`, { "data-testid": `diff-${r.version}` }),
  ]), { "data-testid": "versions" });
  const fresh = v.freshness;
  const freshness = fresh.materialized
    ? `last run ${when(fresh.last_run_at)} (${age(fresh.age_seconds)})` + (fresh.max_event ? `, newest event ${when(fresh.max_event)}` : "")
    : "never materialized";
  const features = table(["feature", "dtype", "TTL", "freshness"], v.features.map((f) => [
    el("span", { id: `feature-${f.name}` }, f.name), el("code", {}, f.dtype), duration(f.ttl_seconds), freshness]),
  { "data-testid": "features" });
  const runs = v.runs.length
    ? table(["Delta version", "committed", "mode", "rows written", "event window"], v.runs.slice().reverse().map((r) => [
      String(r.delta_version), when(r.committed_at), r.mode || r.operation || "", r.rows_written === null ? "" : r.rows_written.toLocaleString("en"),
      r.window ? `${when(r.window.start) || "\u2026"} \u2013 ${when(r.window.end) || "\u2026"}` : ""]), { "data-testid": "runs" })
    : notYet("never materialized");
  const usedBy = v.used_by;
  const uses = facts([
    ["training sets", listLinks(usedBy.training_sets, (id) => `#/training-set/${enc(id)}`)],
    ["services", usedBy.services.join(", ") || "none"],
    ["models", listLinks(usedBy.models, (id) => `#/model/${enc(id.split(":")[1].split("@")[0])}`)],
  ]);
  const drift = el("div", { "data-testid": "drift" });
  if (index && index.sections.drift) {
    drift.append(el("button", { type: "button", class: "link", onclick: () => loadDrift(drift, name, v.version) }, "Compute drift against the training sets that read it"));
  } else drift.append(notYet());
  page(`${name} v${v.version}`,
    el("p", {}, v.description || el("span", { class: "muted" }, "no description"), " ", tags(v.tags)),
    facts([["entity", `${v.entity} (${v.keys.join(", ")})`], ["owner", v.owner || "unknown"],
      ["event time", v.timestamp], ["knowledge time", v.created_timestamp || "none"],
      ["TTL", duration(v.ttl_seconds)], ["fingerprint", el("code", {}, v.fingerprint)],
      ["versions", `${v.versions.length} (latest v${v.latest})`], ["freshness", freshness]]),
    el("section", { "aria-labelledby": "h-versions" }, el("h2", { id: "h-versions" }, "Versions"), versions,
      el("div", { id: "diff", "data-testid": "diff" })),
    el("section", { "aria-labelledby": "h-features" }, el("h2", { id: "h-features" }, "Features"), features),
    el("section", { "aria-labelledby": "h-checks" }, el("h2", { id: "h-checks" }, "Checks"), checks(v.checks)),
    el("section", { "aria-labelledby": "h-stats" }, el("h2", { id: "h-stats" }, "Statistics of the latest run"), stats(v.stats)),
    el("section", { "aria-labelledby": "h-drift" }, el("h2", { id: "h-drift" }, "Drift"), drift),
    el("section", { "aria-labelledby": "h-runs" }, el("h2", { id: "h-runs" }, "Runs (rows per run)"), runs),
    el("section", { "aria-labelledby": "h-used" }, el("h2", { id: "h-used" }, "Used by"), uses),
    el("section", { "aria-labelledby": "h-lineage" }, el("h2", { id: "h-lineage" }, "Lineage"),
      el("p", {}, link(`#/lineage/${enc(`view:${name}@${v.version}`)}`, "Open the full lineage page")),
      el("div", { class: "lineage-host", "data-testid": "view-lineage" })));
  mountLineage(main.querySelector(".lineage-host"), `view:${name}@${v.version}`, false);
  if (focus && focus.diff) await showDiff(name, focus.diff[0], focus.diff[1]);
  if (focus && focus.feature) {
    const cell = document.getElementById(`feature-${focus.feature}`);
    if (cell) {
      cell.closest("tr").classList.add("highlight");
      cell.closest("tr").setAttribute("data-testid", "focused-feature");
      cell.scrollIntoView({ block: "center" });
    }
  }
}

function listLinks(items, href) {
  if (!items.length) return "none";
  return el("span", {}, items.flatMap((item, i) => [i ? ", " : "", link(href(item), item)]));
}

async function showDiff(name, a, b) {
  const host = document.getElementById("diff");
  const d = await api(`views/${enc(name)}/diff?from=${a}&to=${b}`);
  const title = el("h3", { id: "h-diff", tabindex: "-1" }, `Code diff v${d.from} \u2192 v${d.to}`);
  const why = el("p", {}, "Why: ", d.reason.length ? d.reason.join(", ") : "no recorded reason");
  if (d.message) { host.replaceChildren(title, why, el("p", { class: "note" }, d.message)); return; }
  const pre = el("pre", { class: "diff", "aria-label": `code diff from version ${d.from} to ${d.to}` });
  for (const line of d.lines) {
    const cls = line.startsWith("+++") || line.startsWith("---") || line.startsWith("@@") ? "hunk"
      : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
    pre.append(el("span", { class: cls || null }, line), cls ? "" : "\n");
  }
  if (!d.lines.length) pre.append("The normalized code is identical: the change is elsewhere (see why).");
  host.replaceChildren(title, why, pre, d.cut ? el("p", { class: "note" }, "The diff is cut.") : "");
  title.focus();
}

function checks(c) {
  if (!c.recorded) return notYet(`not recorded yet (${c.message})`);
  const rows = Array.isArray(c.results) ? c.results : Object.entries(c.results).map(([name, r]) => ({ name, ...(typeof r === "object" ? r : { result: r }) }));
  return genericTable(rows);
}

// The statistics the materialization records have many columns (quantiles p01..p99, the
// run's fields); show the ones a reader scans, with the histogram drawn, and the run once.
const STATS = ["feature", "dtype", "count", "nulls", "min", "mean", "max", "std", "p50", "distinct"];
function stats(s) {
  if (!s.recorded) return notYet(`not recorded yet (${s.message})`);
  if (!s.rows.length || !("histogram_counts" in s.rows[0])) return genericTable(s.rows);
  const first = s.rows[0];
  const run = first.run_id ? el("p", { class: "muted" }, `run ${first.run_id}, Delta version ${first.delta_version}, ${first.mode || ""}, computed ${when(first.computed_at)}`) : "";
  const top = (r) => (r.top_values || []).map((v, i) => `${v} (${(r.top_counts || [])[i]})`).join(", ");
  return el("div", {}, run, table([...STATS, "histogram", "top values"], s.rows.map((r) => [
    ...STATS.map((k) => cell(r[k], k)),
    (r.histogram_counts || []).length ? histogram(r.histogram_counts) : "", top(r)])));
}

// Rows of unknown shape (statistics, drift, check results): one column per key; a list of
// numbers is drawn as a small histogram.
function genericTable(rows) {
  if (!rows.length) return notYet();
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return table(keys, rows.map((r) => keys.map((k) => cell(r[k], k))));
}
function cell(value, key) {
  const numbers = Array.isArray(value) && value.length && value.every((x) => typeof x === "number");
  if (numbers && /edges$/.test(key || "")) return `${cell(value[0])} \u2026 ${cell(value[value.length - 1])}`;
  if (numbers) return histogram(value);
  if (value && Array.isArray(value.counts)) return histogram(value.counts);
  if (value !== null && typeof value === "object") return el("code", {}, JSON.stringify(value));
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  return value === null || value === undefined ? "" : String(value);
}
function histogram(counts) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 120, h = 28, max = Math.max(...counts, 1), bw = w / counts.length;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("class", "hist");
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", `histogram: ${counts.join(", ")}`);
  counts.forEach((c, i) => {
    const r = document.createElementNS(ns, "rect");
    const bh = Math.max(1, (c / max) * h);
    r.setAttribute("x", i * bw); r.setAttribute("y", h - bh); r.setAttribute("width", Math.max(1, bw - 1)); r.setAttribute("height", bh);
    svg.append(r);
  });
  return svg;
}

async function loadDrift(host, name, version) {
  host.replaceChildren(el("p", { class: "muted" }, "computing\u2026"));
  const d = await api(`views/${enc(name)}/drift?version=${version}`);
  if (!d.recorded) { host.replaceChildren(notYet(`not recorded yet (${d.message})`)); return; }
  host.replaceChildren(...d.reports.map((r) => el("div", {},
    el("h3", {}, "against training set ", link(`#/training-set/${enc(r.training_set)}`, r.training_set)),
    r.message ? el("p", { class: "note" }, r.message) : genericTable(r.rows))));
}

// ---- lineage: the notebook widget's own drawing, with a stand-in for its model ---------------
class Model {
  constructor(state) { this.state = state; this.handlers = {}; }
  get(name) { return this.state[name]; }
  set(name, value) {
    this.state[name] = value;
    for (const cb of this.handlers["change:" + name] || []) cb({ name, new: value });
  }
  on(event, cb) { (this.handlers[event] ||= []).push(cb); }
  off(event, cb) { this.handlers[event] = (this.handlers[event] || []).filter((h) => h !== cb); }
  save_changes() {}
}

function pageOf(id) {
  const [kind, ...rest] = id.split(":");
  const body = rest.join(":");
  if (kind === "view") return `#/view/${enc(body)}`;
  if (kind === "feature") { const [view, feature] = body.split(":"); return `#/feature/${enc(view)}/${enc(feature)}`; }
  if (kind === "training_set") return `#/training-set/${enc(body)}`;
  if (kind === "model") return `#/model/${enc(body.split("@")[0])}`;
  return null;
}

async function mountLineage(host, node, isPage) {
  let data;
  try {
    data = await api(`lineage${node ? `?node=${enc(node)}` : ""}`);
  } catch (err) {
    host.replaceChildren(el("p", { class: "note" }, err.message));
    return;
  }
  data.state.height = isPage ? 560 : 400;
  const model = new Model(data.state);
  const holder = el("div", {});
  const open = el("p", { "data-testid": "selected-page" });
  host.replaceChildren(holder, open);
  widget.render({ model, el: holder });
  // the widget redraws its nodes on every change, which drops keyboard focus: put it back
  // on the same node, so Tab + Enter can keep working in the graph
  let focused = null;
  holder.addEventListener("focusin", (ev) => {
    const g = ev.target.closest && ev.target.closest(".fk-node");
    focused = g ? g.getAttribute("data-id") : null;
  });
  const mark = () => {
    if (focused && (document.activeElement === document.body || !document.activeElement)) {
      const again = holder.querySelector(`.fk-node[data-id="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
    for (const [id, reasons] of Object.entries(data.stale)) {
      const g = holder.querySelector(`.fk-node[data-id="${CSS.escape(id)}"]`);
      if (!g) continue;
      g.classList.add("fk-stale");
      g.querySelector("title").textContent = `${id} (stale: ${reasons.join("; ")})`;
    }
    const selected = model.get("selected");
    const target = selected && pageOf(selected);
    open.replaceChildren(...(selected ? ["Selected: ", el("code", {}, selected), " ",
      target ? link(target, "open its page") : "", " ",
      link(`#/lineage/${enc(selected)}`, "centre the graph on it")] : []));
    if (isPage && selected) history.replaceState(null, "", `#/lineage/${enc(selected)}`);
  };
  for (const name of ["selected", "expanded", "highlight"]) model.on("change:" + name, mark);
  mark();
  if (data.raw_columns.length && isPage) {
    host.append(el("h2", {}, "Upstream raw columns"), el("ul", {}, data.raw_columns.map((c) => el("li", {}, el("code", {}, c)))));
  }
}

async function showLineage(node) {
  page(node ? `Lineage of ${node}` : "Lineage of the store",
    el("p", { class: "muted" }, "Click a node, or focus it with Tab and press Enter, to select it. Stale nodes have a dashed orange border; their reasons are in the details panel."),
    el("div", { class: "lineage-host", "data-testid": "lineage" }));
  await mountLineage(main.querySelector(".lineage-host"), node, true);
}

// ---- training sets and models ------------------------------------------------------------------
async function showTrainingSets() {
  const idx = await loadIndex();
  page(`Training sets (${idx.training_sets.length})`, table(["id", "names", "rows", "views", "created"],
    idx.training_sets.map((t) => [link(`#/training-set/${enc(t.id)}`, t.id), t.names.join(", "), t.rows.toLocaleString("en"), t.views.join(", "), when(t.created_at)])));
}

async function showTrainingSet(id) {
  const t = await api(`training-sets/${enc(id)}`);
  const m = t.manifest;
  page(`Training set ${t.names[0] || t.id}`,
    facts([["id", el("code", {}, t.id)], ["names", t.names.join(", ") || "none"],
      ["still rebuilds", el("span", { class: `badge ${t.rebuilds ? "ok" : "bad"}`, "data-testid": "rebuilds" }, t.rebuilds ? "yes: every pinned version is there" : "no")],
      ["stale", t.stale.length ? el("span", { class: "badge stale" }, "stale") : "no"],
      ["rows", m.result_rows.toLocaleString("en")], ["point in time", m.point_in_time], ["as of", m.as_of || "build time"],
      ["created", when(m.created_at)], ["result hash", el("code", {}, m.result_hash)],
      ["labels", `${m.labels.rows.toLocaleString("en")} rows, timestamp ${m.labels.timestamp}`],
      ["models", listLinks(t.models, (mid) => `#/model/${enc(mid.split(":")[1].split("@")[0])}`)]]),
    t.stale.length ? el("ul", { class: "note", "data-testid": "stale" }, t.stale.map((r) => el("li", {}, r))) : "",
    el("h2", {}, "Pinned versions"),
    table(["view version", "Delta version", "features", "check"], t.pinned.map((p, i) => [
      link(`#/view/${enc(p.view)}@${p.version}`, `${p.view}@${p.version}`), p.delta_version === null ? "none" : String(p.delta_version),
      m.views[i].features.join(", "), el("span", { class: `badge ${p.ok ? "ok" : "bad"}` }, p.ok ? "ok" : "missing"), " ", p.message])),
    el("h2", {}, "Library versions"), facts(Object.entries(m.library_versions)),
    el("h2", {}, "Lineage"), el("div", { class: "lineage-host" }));
  mountLineage(main.querySelector(".lineage-host"), `training_set:${t.id}`, false);
}

async function showModels() {
  const idx = await loadIndex();
  page(`Models (${idx.models.length})`, table(["model", "versions", "training set", "latest"],
    idx.models.map((m) => [link(`#/model/${enc(m.name)}`, m.name), String(m.versions), link(`#/training-set/${enc(m.training_set)}`, m.training_set), when(m.created_at)])));
}

async function showModel(name) {
  const m = await api(`models/${enc(name)}`);
  page(`Model ${m.name}`, ...m.versions.slice().reverse().map((v) => el("section", {},
    el("h2", {}, `version ${v.version}`),
    facts([["logged", when(v.created_at)], ["training set", link(`#/training-set/${enc(v.training_set)}`, v.training_set)],
      ["still rebuilds", el("span", { class: `badge ${v.rebuilds ? "ok" : "bad"}` }, v.rebuilds ? "yes" : "no")],
      ["stale", v.stale.length ? el("ul", {}, v.stale.map((r) => el("li", {}, r))) : "no"],
      ["model", v.model.uri || v.model.type || v.model.kind || ""], ["MLflow run", v.mlflow_run_id || ""],
      ["metrics", Object.entries(v.metrics).map(([k, x]) => `${k} = ${x}`).join(", ")],
      ["description", v.description], ["tags", el("span", {}, tags(v.tags))]]))),
  el("h2", {}, "Lineage"), el("div", { class: "lineage-host" }));
  mountLineage(main.querySelector(".lineage-host"), `model:${m.name}@${m.latest}`, false);
}

// ---- routing --------------------------------------------------------------------------------
const enc = encodeURIComponent;
function nameVersion(text) {
  const [name, version] = decodeURIComponent(text).split("@");
  return [name, version ? Number(version) : null];
}

export async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const [head, ...rest] = parts;
  document.body.dataset.ready = "false";
  try {
    await loadIndex();
    if (!head) return await showHome();
    if (head === "search") return await showSearch(decodeURIComponent(rest.join("/")));
    if (head === "view") {
      const [name, version] = nameVersion(rest[0]);
      const diff = rest[1] === "diff" ? [Number(rest[2]), Number(rest[3])] : null;
      return await showView(name, version, { diff });
    }
    if (head === "feature") {
      const [name, version] = nameVersion(rest[0]);
      return await showView(name, version, { feature: decodeURIComponent(rest[1] || "") });
    }
    if (head === "lineage") return await showLineage(rest.length ? decodeURIComponent(rest.join("/")) : null);
    if (head === "training-sets") return await showTrainingSets();
    if (head === "training-set") return await showTrainingSet(decodeURIComponent(rest[0]));
    if (head === "models") return await showModels();
    if (head === "model") return await showModel(decodeURIComponent(rest[0]));
    page("Not found", el("p", {}, "No page at this address. ", link("#/", "See every view.")));
  } catch (err) {
    page("Something went wrong", el("p", { class: "note", role: "alert" }, err.message), link("#/", "Back to every view"));
  } finally {
    document.body.dataset.ready = "true";
  }
}

// ---- keyboard ----------------------------------------------------------------------------------
let typing = null;
search.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    const text = search.value.trim();
    // replaceState: typing must not flood history, and must not re-route (focus stays here)
    history.replaceState(null, "", text ? `#/search/${enc(text)}` : "#/");
    (text ? showSearch(text) : showHome()).finally(() => { document.body.dataset.ready = "true"; });
  }, 60);
});
search.closest("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const first = main.querySelector("[data-result]");
  if (first) first.focus();
});
search.addEventListener("keydown", (ev) => {
  if (ev.key === "ArrowDown") {
    const first = main.querySelector("[data-result]");
    if (first) { ev.preventDefault(); first.focus(); }
  }
});
main.addEventListener("keydown", (ev) => {
  const items = [...main.querySelectorAll("[data-result]")];
  const at = items.indexOf(document.activeElement);
  if (at < 0) return;
  if (ev.key === "ArrowDown" && at < items.length - 1) { ev.preventDefault(); items[at + 1].focus(); }
  if (ev.key === "ArrowUp") { ev.preventDefault(); (at ? items[at - 1] : search).focus(); }
  if (ev.key === "Escape") { ev.preventDefault(); search.focus(); }
});
document.addEventListener("keydown", (ev) => {
  const inField = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
  if (ev.key === "/" && !inField) { ev.preventDefault(); search.focus(); }
});
// the skip link must not change the hash: the hash is the route
document.querySelector("[data-skip]").addEventListener("click", (ev) => { ev.preventDefault(); main.focus(); });
// after a navigation, focus moves to the new content (unless the page put it somewhere in it)
window.addEventListener("hashchange", () => {
  route().then(() => { if (!main.contains(document.activeElement)) main.focus({ preventScroll: true }); });
});
route();
