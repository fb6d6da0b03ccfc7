// raylite dashboard: tabs over the head's JSON API, polled while a tab is shown.
// Plain JS, no build step. Every value from the cluster is shown with textContent,
// never parsed as HTML: task names and errors are the user's text.
"use strict";

const POLL_MS = 1500;
const state = { tab: "cluster", busy: false, taskOffset: 0, open: new Set(), logPid: 0, logNext: 0 };

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function seconds(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "-";
}

function short(id) {
  // Ids are a per-process prefix and a counter: only the whole id tells two apart.
  return id || "-";
}

function card(label, value, cls) {
  return el("div", { class: `card ${cls || ""}` }, el("div", { class: "value" }, value),
    el("div", { class: "label" }, label));
}

async function api(path) {
  const resp = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (resp.status === 401) {
    window.location.assign("/login");
    throw new Error("not logged in");
  }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

// ------------------------------------------------------------------ cluster
function resourceText(name, used, total, byteNames) {
  if (byteNames.includes(name)) return `${name} ${bytes(used)} / ${bytes(total)}`;
  return `${name} ${+used.toFixed(2)} / ${+total.toFixed(2)}`;
}

function meter(used, total) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const bar = el("span", { class: "meter-fill" });
  bar.style.width = `${pct}%`;
  return el("span", { class: "meter" }, bar);
}

async function renderCluster() {
  const d = await api("/api/cluster");
  const alive = d.nodes.filter((n) => n.alive).length;
  const cpu = d.total.CPU || 0;
  const t = d.tasks;
  document.getElementById("cluster-cards").replaceChildren(
    card("nodes alive", `${alive} / ${d.nodes.length}`),
    card("CPU used", `${+(d.used.CPU || 0).toFixed(2)} / ${cpu}`),
    card("GPU used", `${+(d.used.GPU || 0).toFixed(2)} / ${d.total.GPU || 0}`),
    card("object store (head node)", `${bytes(d.store.used_bytes)} / ${bytes(d.store.capacity_bytes)}`),
    card("spilled", `${bytes(d.store.spilled_bytes)}`),
    card("objects", d.store.num_objects),
    card("tasks running", t.RUNNING || 0),
    card("tasks finished", t.FINISHED || 0),
    card("tasks failed", t.FAILED || 0, (t.FAILED || 0) ? "bad" : ""),
    card("actors alive", d.head.actors_alive),
    card("jobs", d.head.jobs),
    card("uptime", seconds(d.head.uptime_s)),
  );
  const rows = d.nodes.map((n) => {
    const res = el("div", { class: "resources" });
    for (const name of Object.keys(n.total).sort()) {
      const used = n.used[name] || 0;
      res.append(el("div", {}, meter(used, n.total[name]), " ",
        resourceText(name, used, n.total[name], d.byte_resources)));
    }
    const store = n.store
      ? `${bytes(n.store.used_bytes)} / ${bytes(n.store.capacity_bytes)}, ${n.store.num_objects} objects, ${bytes(n.store.spilled_bytes)} spilled`
      : "not reported";
    return el("tr", { class: n.alive ? "" : "dead" },
      el("td", { class: "mono" }, short(n.node_id), n.is_head ? el("span", { class: "tag" }, "head") : null),
      el("td", { class: "mono" }, n.address, el("div", { class: "muted" }, n.hostname)),
      el("td", {}, n.alive ? "ALIVE" : `DEAD: ${n.cause}`),
      el("td", {}, res),
      el("td", {}, store),
      el("td", {}, n.workers === null ? "-" : n.workers),
      el("td", {}, n.pending));
  });
  fill(document.querySelector("#nodes-table tbody"), rows);
}

// -------------------------------------------------------------------- tasks
function stateCell(s) {
  return el("td", { class: `state state-${s.toLowerCase()}` }, s);
}

async function renderTasks() {
  const stateSel = document.getElementById("task-state").value;
  const func = document.getElementById("task-func").value.trim();
  const q = new URLSearchParams({ limit: "100", offset: String(state.taskOffset) });
  if (stateSel) q.set("state", stateSel);
  if (func) q.set("func", func);
  const d = await api(`/api/tasks?${q}`);
  const s = d.states;
  document.getElementById("task-states").replaceChildren(
    card("running", s.RUNNING || 0), card("finished", s.FINISHED || 0),
    card("failed", s.FAILED || 0, (s.FAILED || 0) ? "bad" : ""),
    card("records kept", d.recorded), card("records dropped", d.evicted));
  fill(document.querySelector("#task-functions tbody"), d.functions.map((f) =>
    el("tr", { class: "clickable", onclick: () => { document.getElementById("task-func").value = f.func; state.taskOffset = 0; refresh(); } },
      el("td", { class: "mono" }, f.func), el("td", {}, f.type),
      el("td", {}, f.counts.RUNNING || 0), el("td", {}, f.counts.FINISHED || 0),
      el("td", { class: (f.counts.FAILED || 0) ? "bad" : "" }, f.counts.FAILED || 0),
      el("td", {}, f.total))));
  const rows = [];
  for (const t of d.rows) {
    const open = state.open.has(t.task_id);
    const toggle = () => {
      if (state.open.has(t.task_id)) state.open.delete(t.task_id); else state.open.add(t.task_id);
      refresh();
    };
    rows.push(el("tr", { class: t.error ? "clickable failed" : "", dataset: { taskId: t.task_id }, onclick: t.error ? toggle : null },
      el("td", { class: "mono" }, short(t.task_id)), el("td", { class: "mono" }, t.name),
      stateCell(t.state), el("td", {}, t.type), el("td", {}, `pid ${t.pid}`),
      el("td", {}, clock(t.start)), el("td", {}, seconds(t.duration_s)),
      el("td", {}, t.error_type ? `${t.error_type} ${open ? "▾" : "▸"}` : "")));
    if (t.error && open) {
      rows.push(el("tr", { class: "detail" }, el("td", { colspan: "8" },
        el("pre", { class: "traceback" }, t.error))));
    }
  }
  fill(document.querySelector("#task-rows tbody"), rows);
  const last = d.offset + d.rows.length;
  document.getElementById("task-range").textContent =
    `${d.rows.length ? d.offset + 1 : 0}–${last} of ${d.matching}`;
  document.getElementById("task-older").disabled = d.rows.length < d.limit;
  document.getElementById("task-newer").disabled = d.offset === 0;
}

// ------------------------------------------------------------------- actors
async function renderActors() {
  const d = await api("/api/actors?limit=500");
  document.getElementById("actor-states").replaceChildren(
    card("actors", d.total),
    ...Object.entries(d.states).map(([s, n]) => card(s.toLowerCase(), n)));
  fill(document.querySelector("#actor-rows tbody"), d.rows.map((a) =>
    el("tr", { class: a.state === "DEAD" ? "dead" : "", dataset: { actorId: a.actor_id } },
      el("td", { class: "mono" }, short(a.actor_id)), el("td", { class: "mono" }, a.class_name),
      el("td", {}, a.name || ""), stateCell(a.state), el("td", { class: "mono" }, a.node || short(a.node_id)),
      el("td", {}, a.pid || "-"), el("td", {}, a.restarts), el("td", {}, a.restarts_left),
      el("td", { class: "cause" }, a.cause || ""))));
}

// --------------------------------------------------------- placement groups
async function renderGroups() {
  const d = await api("/api/placement_groups?limit=500");
  document.getElementById("group-states").replaceChildren(
    card("placement groups", d.total),
    ...Object.entries(d.states).map(([s, n]) => card(s.toLowerCase(), n)));
  fill(document.querySelector("#group-rows tbody"), d.rows.map((g) =>
    el("tr", { class: g.state === "REMOVED" ? "dead" : "" },
      el("td", { class: "mono" }, short(g.placement_group_id)), el("td", {}, g.name || ""),
      stateCell(g.state), el("td", {}, g.strategy),
      el("td", { class: "mono" }, g.bundles.map((b) =>
        `${JSON.stringify(b.resources)} @ ${b.node || short(b.node_id || "") || "-"}`).join("; ")))));
}

// --------------------------------------------------------------------- jobs
async function renderJobs() {
  const d = await api("/api/submitted_jobs");
  fill(document.querySelector("#job-rows tbody"), d.rows.map((j) =>
    el("tr", {}, el("td", { class: "mono" }, j.submission_id), stateCell(j.status),
      el("td", { class: "mono" }, j.entrypoint), el("td", {}, clock(j.start_time / 1000)),
      el("td", {}, j.end_time ? seconds((j.end_time - j.start_time) / 1000) : "-"),
      el("td", {}, j.driver_exit_code ?? "-"), el("td", { class: "cause" }, j.message || ""))));
}

// ------------------------------------------------------------------ objects
async function renderObjects() {
  const sort = document.getElementById("object-sort").value;
  const d = await api(`/api/objects?limit=200&sort=${sort}`);
  document.getElementById("object-cards").replaceChildren(
    card("objects in the store", d.total),
    card("in memory", `${bytes(d.store.used_bytes)} / ${bytes(d.store.capacity_bytes)}`),
    card("spilled", bytes(d.store.spilled_bytes)),
    card("spilled so far", d.store.spilled_objects),
    card("read back from disk", d.store.restored_objects));
  fill(document.querySelector("#object-rows tbody"), d.rows.map((o) =>
    el("tr", {}, el("td", { class: "mono" }, o.object_id), el("td", {}, bytes(o.size)),
      el("td", { class: "mono" }, short(o.node_id || "")),
      el("td", {}, o.owner), el("td", {}, o.spilled ? "yes" : "no"), el("td", {}, o.readers),
      el("td", {}, o.copies))));
}

// --------------------------------------------------------------------- logs
async function renderLogs() {
  const sel = document.getElementById("log-worker");
  const w = await api("/api/workers");
  const chosen = sel.value;
  sel.replaceChildren(...w.rows.map((r) => el("option", { value: String(r.pid) },
    `pid ${r.pid} ${r.state.toLowerCase()}${r.actor_class ? ` (${r.actor_class})` : ""} — ${r.log_lines} lines`)));
  if (chosen && w.rows.some((r) => String(r.pid) === chosen)) sel.value = chosen;
  else {
    const talker = w.rows.find((r) => r.log_lines > 0); // first look: a worker that printed
    if (talker) sel.value = String(talker.pid);
  }
  const pid = Number(sel.value || 0);
  const pre = document.getElementById("log-lines");
  if (!pid) { pre.textContent = "no worker has started yet"; return; }
  if (pid !== state.logPid) { state.logPid = pid; state.logNext = 0; pre.textContent = ""; }
  const q = new URLSearchParams({ pid: String(pid), tail: "1000" });
  if (state.logNext) q.set("after", String(state.logNext));
  const d = await api(`/api/logs?${q}`);
  if (d.lines.length) {
    pre.append(d.lines.map(([, stream, text]) => (stream === "err" ? "! " : "") + text).join("\n") + "\n");
    const lines = pre.textContent.split("\n");
    if (lines.length > 5000) pre.textContent = lines.slice(-5000).join("\n");
    if (document.getElementById("log-follow").checked) pre.scrollTop = pre.scrollHeight;
  }
  state.logNext = d.next;
  document.getElementById("log-info").textContent = d.alive ? "running" : "exited";
}

// ----------------------------------------------------------------- timeline
let timeline = null;

async function renderTimeline() {
  if (!timeline) timeline = new window.RayliteTimeline(document.getElementById("timeline-canvas"));
  await timeline.poll();
}

// ---------------------------------------------------------------- the loop
const RENDER = { cluster: renderCluster, tasks: renderTasks, actors: renderActors, groups: renderGroups,
  jobs: renderJobs,
  objects: renderObjects, logs: renderLogs, timeline: renderTimeline };

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const status = document.getElementById("status");
  try {
    await RENDER[state.tab]();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("bad");
  } catch (err) {
    status.textContent = `cannot reach the head: ${err.message}`;
    status.classList.add("bad");
  } finally {
    state.busy = false;
  }
}

function showTab() {
  const tab = (window.location.hash || "#cluster").slice(1);
  state.tab = RENDER[tab] ? tab : "cluster";
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${state.tab}`;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === state.tab);
  document.body.dataset.tab = state.tab;
  refresh();
}

window.addEventListener("hashchange", showTab);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("task-state").addEventListener("change", () => { state.taskOffset = 0; refresh(); });
  document.getElementById("task-func").addEventListener("change", () => { state.taskOffset = 0; refresh(); });
  document.getElementById("task-older").addEventListener("click", () => { state.taskOffset += 100; refresh(); });
  document.getElementById("task-newer").addEventListener("click", () => { state.taskOffset = Math.max(0, state.taskOffset - 100); refresh(); });
  document.getElementById("object-sort").addEventListener("change", refresh);
  document.getElementById("log-worker").addEventListener("change", refresh);
  showTab();
  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
});
