// PBS Rclone operator console: a page per hash route, data from the API with the signed-in
// token. Text from the API is only ever set as textContent, never parsed as HTML.
"use strict";

// The console is at <base>/console (any stage or proxy prefix before it); the API beside it.
const API = `${location.pathname.replace(/\/console\/?$/, "")}/api/v1`;
const TOKEN_KEY = "pbs-token";
const TERMINAL = ["succeeded", "failed", "cancelled"];
let timer = null;
// What a page undoes when another is shown (listeners it added to the window).
let leaving = [];

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    else if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.error && body.error.field;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(API + path, { method, headers, body: body === undefined ? undefined : body });
  if (res.status === 401) { signOut("Your session has ended: sign in again."); throw new ApiError(401, null); }
  const text = await res.text();
  const isJson = (res.headers.get("content-type") || "").includes("json");
  const data = isJson && text ? JSON.parse(text) : text;
  if (!res.ok) throw new ApiError(res.status, isJson ? data : null);
  return data;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function errorBox(err, id) {
  return el("div", { class: "error", id: id || null, role: "alert" },
    err.field ? `${err.field}: ${err.message}` : err.message);
}

function badge(state) { return el("span", { class: `badge ${state}` }, state); }

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(t) { return t ? new Date(t).toLocaleString() : ""; }

function progressOf(job) {
  const p = job.progress;
  if (!p || job.state !== "running") return null;
  const pct = p.total_bytes ? Math.min(100, (100 * p.bytes) / p.total_bytes) : 0;
  return { pct, text: `${bytes(p.bytes)} of ${bytes(p.total_bytes)}, ${bytes(p.bytes_per_second)}/s` +
    (p.eta_seconds !== undefined ? `, ${p.eta_seconds}s left` : "") };
}

function progressBar(job, id) {
  const p = progressOf(job);
  if (!p) return null;
  return el("div", { id: id || null, class: "progress", "data-pct": p.pct.toFixed(0) },
    el("div", { class: "bar", title: p.text }, el("span", { style: { width: `${p.pct.toFixed(1)}%` } })),
    el("small", { class: "muted" }, `${p.pct.toFixed(0)}% · ${p.text}`));
}

// ---------------------------------------------------------------- sign in

// Shows the page at `hash`, also when it is the current one (no hashchange fires then).
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (message) sessionStorage.setItem("pbs-message", message);
  go("#/sign-in");
}

function signInView() {
  const message = sessionStorage.getItem("pbs-message");
  sessionStorage.removeItem("pbs-message");
  const input = el("textarea", { id: "token", rows: 4, placeholder: "Paste an ID token (JWT)", class: "short" });
  const status = el("div");
  const submit = async (ev) => {
    ev.preventDefault();
    const candidate = input.value.trim();
    try {
      const res = await fetch(`${API}/me`, { headers: { authorization: `Bearer ${candidate}` } });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        const why = body && body.error ? body.error.message : `HTTP ${res.status}`;
        status.replaceChildren(errorBox(new Error(`That token was refused: ${why}`)));
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, candidate);
      go(location.hash && location.hash !== "#/sign-in" ? location.hash : "#/dashboard");
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  };
  show(el("div", { class: "card" },
    el("h1", {}, "Sign in"),
    message ? el("div", { class: "error", role: "status" }, message) : null,
    el("p", { class: "muted" },
      "Sign in with a token from the stack's user pool (its hosted sign-in returns here), or locally with ",
      el("code", {}, "./dev token operator"), "."),
    el("form", { onsubmit: submit }, input,
      el("div", { class: "actions" }, el("button", { id: "sign-in", class: "primary", type: "submit" }, "Sign in"))),
    status));
}

// ---------------------------------------------------------------- dashboard

// The ranges the dashboard shows, in hours (the stats API keeps 7 days).
const RANGES = { "24h": { hours: 24, words: "last 24 hours" }, "7d": { hours: 168, words: "last 7 days" } };
// Each error class its own stroke pattern as well as colour: a chart is read without colour too.
const CLASS_LOOKS = [
  { stroke: "#cf222e", dash: [] }, { stroke: "#8250df", dash: [8, 4] }, { stroke: "#bc4c00", dash: [2, 3] },
  { stroke: "#0a3069", dash: [10, 3, 2, 3] }, { stroke: "#6e7781", dash: [4, 4] }, { stroke: "#116329", dash: [1, 6] },
];

function ago(seconds) {
  if (seconds === undefined || seconds === null) return "";
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function waited(seconds) { return ago(seconds).replace(/ ago$/, ""); }

// An hour key of the stats API (`2026-11-30T14`, UTC) as Unix seconds.
function hourSeconds(key) { return Date.parse(`${key}:00:00Z`) / 1000; }

function hourLabel(key, range) {
  const d = new Date(hourSeconds(key) * 1000);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return range === "24h" ? time : `${d.toLocaleDateString([], { weekday: "short", day: "numeric" })} ${time}`;
}

// A chart of `series` ({label, values, look}) over `hours`, with the numbers beside it as a table
// for those who cannot see the picture; `describe` says in words what it shows.
class Chart {
  constructor(id, title, format, kind, counts) {
    this.id = id; this.format = format; this.kind = kind; this.counts = counts; this.plot = null; this.labels = "";
    this.box = el("div", { class: "chart", role: "img" });
    this.table = el("div", { class: "scroll" });
    this.node = el("figure", { id, class: "card chart-card" }, el("figcaption", {}, title), this.box,
      el("details", {}, el("summary", {}, "The numbers by hour"), this.table));
  }

  width() { return Math.max(260, this.box.clientWidth || 600); }

  update(hours, series, range, describe) {
    const xs = hours.map((h) => hourSeconds(h.hour));
    this.box.setAttribute("aria-label", describe);
    const labels = series.map((s) => s.label).join("|");
    if (!this.plot || labels !== this.labels) {
      if (this.plot) this.plot.destroy();
      this.labels = labels;
      const bars = this.kind === "bars" && typeof uPlot.paths.bars === "function"
        ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined;
      this.plot = new uPlot({
        width: this.width(), height: 190,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        axes: [{ stroke: "#5f6b7a" }, {
          stroke: "#5f6b7a", size: this.counts ? 48 : 84, values: (u, vals) => vals.map((v) => this.format(v)),
          // Counts are whole: no tick between 0 and 1.
          incrs: this.counts ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6] : undefined,
        }],
        legend: { live: true },
        series: [{ label: "Hour", value: (u, v) => (v === null ? "—" : new Date(v * 1000).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" })) }]
          .concat(series.map((s) => ({
            label: s.label, stroke: s.look.stroke, dash: s.look.dash, width: 2,
            fill: this.kind === "bars" ? `${s.look.stroke}55` : undefined,
            paths: bars, points: { show: this.kind !== "bars", size: 5 },
            value: (u, v) => (v === null || v === undefined ? "—" : this.format(v)),
          }))),
      }, [xs, ...series.map((s) => s.values)], this.box);
    } else {
      this.plot.setData([xs, ...series.map((s) => s.values)]);
    }
    // The table lists the hours that had anything, newest first.
    const rows = hours.map((h, i) => ({ h, values: series.map((s) => s.values[i]) }))
      .filter((r) => r.values.some((v) => v)).reverse();
    this.table.replaceChildren(rows.length ? el("table", { class: "numbers" },
      el("thead", {}, el("tr", {}, el("th", {}, "Hour"), series.map((s) => el("th", {}, s.label)))),
      el("tbody", {}, rows.map((r) => el("tr", { "data-hour": r.h.hour },
        el("td", {}, hourLabel(r.h.hour, range)), r.values.map((v) => el("td", {}, this.format(v || 0)))))))
      : el("p", { class: "muted" }, `Nothing in the ${RANGES[range].words}.`));
  }

  resize() { if (this.plot) this.plot.setSize({ width: this.width(), height: 190 }); }
}

function tile(id, label, value, shown) {
  return el("div", { class: "tile", id, "data-value": String(value) },
    el("strong", {}, shown === undefined ? value.toLocaleString() : shown), el("span", {}, label));
}

async function dashboardView(params) {
  const range = RANGES[params.get("range")] ? params.get("range") : "24h";
  const pool = params.get("pool") || "";
  const here = (r, p) => {
    const q = new URLSearchParams();
    if (r !== "24h") q.set("range", r);
    if (p) q.set("pool", p);
    return q.toString() ? `#/dashboard?${q}` : "#/dashboard";
  };
  const poolSelect = el("select", { id: "dash-pool", onchange: (e) => { location.hash = here(range, e.target.value); } },
    el("option", { value: "" }, "all pools"));
  const rangeButtons = Object.keys(RANGES).map((r) => el("button", {
    id: `range-${r}`, type: "button", "aria-pressed": r === range ? "true" : "false",
    class: r === range ? "primary" : null, onclick: () => { location.hash = here(r, pool); },
  }, RANGES[r].words.replace("last ", "")));
  const problem = el("div");
  const totals = el("div", { id: "dash-totals", class: "tiles" });
  const files = new Chart("chart-files", "Files delivered per hour", (v) => Math.round(v).toLocaleString(), "bars", true);
  const volume = new Chart("chart-bytes", "Bytes delivered per hour", (v) => bytes(v), "bars", false);
  const failures = new Chart("chart-failures", "Failed jobs per hour, by error class", (v) => Math.round(v).toLocaleString(), "lines", true);
  const classes = el("div", { class: "scroll" });
  const pools = el("div", { class: "scroll" });
  const executors = el("div", { class: "scroll" });
  const running = el("div", { class: "scroll" });
  const updated = el("p", { id: "dash-updated", class: "muted" });
  show(el("h1", {}, "Dashboard"),
    el("div", { class: "toolbar" }, el("span", { role: "group", "aria-label": "Time range", class: "segmented" }, rangeButtons),
      el("label", {}, "Pool ", poolSelect)),
    problem, totals,
    el("div", { class: "charts" }, files.node, volume.node, failures.node),
    el("h2", {}, "Failures by error class"), classes,
    el("h2", {}, "Queues"), pools,
    el("h2", {}, "Executors"), executors,
    el("h2", {}, "Running jobs"), running, updated);
  const resize = () => [files, volume, failures].forEach((c) => c.resize());
  window.addEventListener("resize", resize);
  leaving.push(() => window.removeEventListener("resize", resize));

  const refresh = async () => {
    const q = new URLSearchParams({ hours: String(RANGES[range].hours) });
    if (pool) q.set("pool", pool);
    const jobsQuery = new URLSearchParams({ state: "running", limit: "20" });
    if (pool) jobsQuery.set("pool", pool);
    let stats, poolList, execs, jobs;
    try {
      [stats, poolList, execs, jobs] = await Promise.all([api("GET", `/stats?${q}`), api("GET", "/pools"),
        api("GET", "/executors"), api("GET", `/jobs?${jobsQuery}`)]);
    } catch (err) { problem.replaceChildren(errorBox(err)); return; }
    problem.replaceChildren();
    const known = poolList.pools.map((p) => p.pool).filter(Boolean);
    if (poolSelect.options.length !== known.length + 1 || pool && !known.includes(pool)) {
      poolSelect.replaceChildren(el("option", { value: "" }, "all pools"),
        ...[...new Set(pool ? [...known, pool] : known)].map((p) => el("option", { value: p }, p)));
    }
    poolSelect.value = pool;
    const t = stats.total;
    const hours = stats.hours;
    const words = `${RANGES[range].words}${pool ? ` in pool ${pool}` : ""}`;
    totals.replaceChildren(
      tile("dash-files", "files delivered", t.files), tile("dash-bytes", "delivered", t.bytes, bytes(t.bytes)),
      tile("dash-succeeded", "jobs succeeded", t.succeeded), tile("dash-failed", "jobs failed", t.failed),
      tile("dash-cancelled", "jobs cancelled", t.cancelled));
    const busiest = (values) => values.reduce((best, v, i) => (v > values[best] ? i : best), 0);
    const fileValues = hours.map((h) => h.files);
    const byteValues = hours.map((h) => h.bytes);
    files.update(hours, [{ label: "Files", values: fileValues, look: { stroke: "#1f6feb", dash: [] } }], range,
      `Files delivered per hour, ${words}: ${t.files} in all` +
      (t.files ? `, most at ${hourLabel(hours[busiest(fileValues)].hour, range)} (${fileValues[busiest(fileValues)]})` : "") + ".");
    volume.update(hours, [{ label: "Bytes", values: byteValues, look: { stroke: "#1a7f37", dash: [] } }], range,
      `Bytes delivered per hour, ${words}: ${bytes(t.bytes)} in all.`);
    const classTotals = {};
    for (const h of hours) for (const [c, n] of Object.entries(h.failed_by_class || {})) classTotals[c] = (classTotals[c] || 0) + n;
    const classNames = Object.keys(classTotals).sort();
    failures.update(hours, classNames.length
      ? classNames.map((c, i) => ({ label: c, values: hours.map((h) => (h.failed_by_class || {})[c] || 0), look: CLASS_LOOKS[i % CLASS_LOOKS.length] }))
      : [{ label: "failed", values: hours.map((h) => h.failed), look: CLASS_LOOKS[0] }], range,
      `Failed jobs per hour by error class, ${words}: ${t.failed} in all` +
      (classNames.length ? ` (${classNames.map((c) => `${c} ${classTotals[c]}`).join(", ")})` : "") + ".");
    classes.replaceChildren(classNames.length ? el("table", { id: "failures-by-class" },
      el("thead", {}, el("tr", {}, el("th", {}, "Error class"), el("th", {}, "Jobs failed"))),
      el("tbody", {}, classNames.map((c) => el("tr", { "data-class": c, "data-count": String(classTotals[c]) },
        el("td", {}, c), el("td", {}, classTotals[c].toLocaleString())))))
      : el("p", { id: "failures-by-class", class: "muted" }, `No job failed in the ${words}.`));
    const shownPools = poolList.pools.filter((p) => p.pool && (!pool || p.pool === pool));
    pools.replaceChildren(el("table", { id: "dash-pools" },
      el("thead", {}, el("tr", {}, ["Pool", "Executors online", "Waiting", "Running or held", "Retries waiting", "Oldest job not started"].map((h) => el("th", {}, h)))),
      el("tbody", {}, shownPools.map((p) => {
        const b = p.backlog;
        const oldest = b && b.oldest_job;
        return el("tr", { "data-pool": p.pool, "data-waiting": b ? String(b.waiting) : "" },
          el("td", {}, p.pool), el("td", {}, `${p.online} of ${p.executors.length}`),
          b ? [el("td", {}, String(b.waiting)), el("td", {}, String(b.in_flight)), el("td", {}, String(b.delayed)),
            el("td", { class: "oldest" }, oldest
              ? [el("a", { href: `#/jobs/${encodeURIComponent(oldest.job_id)}`, "data-job": oldest.job_id }, oldest.job_id),
                ` waiting ${waited(oldest.age_seconds)}`] : "none")]
            : el("td", { colspan: 4, class: "muted" }, p.backlog_error ? `queue unreadable: ${p.backlog_error}` : "no queue yet"));
      }))));
    const shownExecs = execs.executors.filter((e) => !pool || e.pool === pool)
      .sort((a, b) => (b.online - a.online) || ((a.silent_seconds ?? 1e12) - (b.silent_seconds ?? 1e12)));
    executors.replaceChildren(shownExecs.length ? el("table", { id: "dash-executors" },
      el("thead", {}, el("tr", {}, ["Executor", "Pool", "Status", "Last heartbeat", "Running jobs"].map((h) => el("th", {}, h)))),
      el("tbody", {}, shownExecs.map((e) => el("tr", { "data-executor": e.executor_id, "data-online": String(e.online) },
        el("td", {}, e.executor_id), el("td", {}, e.pool || ""), el("td", {}, badge(e.online ? "online" : "offline")),
        el("td", { title: when(e.last_seen) }, ago(e.silent_seconds)), el("td", {}, e.running_jobs ?? "")))))
      : el("p", { class: "muted" }, "No executor has reported yet."));
    running.replaceChildren(jobs.jobs.length ? el("table", { id: "dash-running" },
      el("thead", {}, el("tr", {}, ["File", "Pool", "Executor", "Progress"].map((h) => el("th", {}, h)))),
      el("tbody", {}, jobs.jobs.map((j) => el("tr", { "data-job": j.job_id },
        el("td", { class: "id" }, el("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}`, title: j.job_id }, jobName(j))),
        el("td", {}, j.pool || ""), el("td", {}, j.executor_id || ""),
        el("td", {}, progressBar(j) || "starting")))))
      : el("p", { id: "dash-running", class: "muted" }, "No job is running."));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; counts per hour are kept 8 days.`;
  };
  await refresh();
  timer = setInterval(refresh, 5000);
}

// A job is named by its first file (and how many more), its id kept as the link's title.
function jobName(j) {
  return j.first_key ? `${j.first_key}${j.file_count > 1 ? ` +${j.file_count - 1} more` : ""}` : j.job_id;
}

// ---------------------------------------------------------------- jobs

async function jobsView(params) {
  const state = params.get("state") || "";
  const prefix = params.get("key_prefix") || "";
  const template = params.get("template") || "";
  const jobsHash = (st, kp, tp) => {
    const q = new URLSearchParams();
    if (st) q.set("state", st);
    if (kp) q.set("key_prefix", kp);
    if (tp) q.set("template", tp);
    return q.toString() ? `#/jobs?${q}` : "#/jobs";
  };
  const select = el("select", { id: "state-filter", onchange: (e) => {
    location.hash = jobsHash(e.target.value, prefix, template);
  } }, el("option", { value: "" }, "all states"),
  ...["queued", "running", "succeeded", "failed", "cancelled"].map((s) =>
    el("option", { value: s, selected: s === state }, s)));
  const search = el("input", { id: "key-search", type: "search", value: prefix, placeholder: "invoices/2026-11/",
    "aria-label": "File name starts with" });
  const searchForm = el("form", { id: "key-search-form", role: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = jobsHash(state, search.value.trim(), template);
  } }, el("label", {}, "File ", search), el("button", { type: "submit" }, "Find"));
  // Templates by id; the list fills in once read (a viewer may list them too).
  const templateSelect = el("select", { id: "template-filter", onchange: (e) => {
    location.hash = jobsHash(state, prefix, e.target.value);
  } }, el("option", { value: "" }, "all templates"), template ? el("option", { value: template }, template) : null);
  templateSelect.value = template;
  api("GET", "/templates").then((data) => {
    const ids = [...new Set([...data.templates.map((t) => t.id), ...(template ? [template] : [])])].sort();
    templateSelect.replaceChildren(el("option", { value: "" }, "all templates"), ...ids.map((id) => el("option", { value: id }, id)));
    templateSelect.value = template;
  }).catch(() => {});
  const body = el("tbody");
  const table = el("div", { class: "scroll" }, el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ["State", "File", "Template", "Files", "Progress", "Created", "Executor"].map((h) => el("th", {}, h)))),
    body));
  const problem = el("div");
  show(el("h1", {}, "Jobs"), el("div", { class: "toolbar" }, el("label", {}, "State ", select),
    el("label", {}, "Template ", templateSelect), searchForm,
    el("a", { href: "#/jobs/new" }, "New manual job")), problem, table);
  const refresh = async () => {
    try {
      const q = new URLSearchParams({ limit: "100" });
      if (state) q.set("state", state);
      if (prefix) q.set("key_prefix", prefix);
      if (template) q.set("template", template);
      const data = await api("GET", `/jobs?${q}`);
      body.replaceChildren(...data.jobs.map((j) => el("tr", { "data-job": j.job_id, "data-state": j.state },
        el("td", { class: "state" }, badge(j.state)),
        el("td", { class: "id" }, el("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}`, title: j.job_id }, jobName(j))),
        el("td", {}, j.template_id || ""),
        el("td", {}, `${j.file_count} · ${bytes(j.total_bytes)}`),
        el("td", {}, progressBar(j) || ""),
        el("td", {}, when(j.created_at)),
        el("td", {}, j.executor_id || ""))));
      if (!data.jobs.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" },
        prefix ? `No job has a file starting with ${prefix}.` : "No jobs.")));
      problem.replaceChildren();
    } catch (err) { problem.replaceChildren(errorBox(err)); }
  };
  await refresh();
  timer = setInterval(refresh, 2000);
}

async function jobView(id) {
  const problem = el("div");
  const logBox = el("pre", { id: "log" }, "");
  const head = el("div");
  const reportBox = el("div", { id: "report" });
  show(el("h1", {}, "Job ", el("code", {}, id)), problem, head,
    el("h2", {}, "Delivery report"), reportBox, el("h2", {}, "rclone log"), logBox);
  let logShown = false;
  let reportShown = false;
  const act = (verb) => async () => {
    if (verb === "cancel" && !confirm(`Cancel job ${id}?`)) return;
    try {
      const res = await api("POST", `/jobs/${encodeURIComponent(id)}/${verb}`);
      if (verb === "retry") location.hash = `#/jobs/${encodeURIComponent(res.job_id)}`;
      else await refresh();
    } catch (err) { problem.replaceChildren(errorBox(err)); }
  };
  const refresh = async () => {
    let job;
    try { job = await api("GET", `/jobs/${encodeURIComponent(id)}`); } catch (err) {
      // A rule's retry appears once its executor reports it: keep looking.
      problem.replaceChildren(errorBox(err)); return;
    }
    problem.replaceChildren();
    const files = (job.files || []).slice(0, 50).map((f) => el("li", {}, `${f.key} → ${f.dest_path || ""}`));
    head.replaceChildren(el("div", { class: "card" },
      el("dl", {},
        el("dt", {}, "State"), el("dd", { id: "job-state", "data-state": job.state }, badge(job.state)),
        el("dt", {}, "Template"), el("dd", {}, job.template_id || ""),
        el("dt", {}, "Pool / executor"), el("dd", {}, `${job.pool || ""} / ${job.executor_id || "—"}`),
        el("dt", {}, "Destination"), el("dd", {}, job.destination || ""),
        job.origin && job.origin !== "manual" ? [el("dt", {}, "Made by"), el("dd", { id: "job-origin" },
          `${job.origin} rule ${job.origin_rule || ""}${job.origin_why ? `: ${job.origin_why}` : ""}`)] : null,
        job.transfer ? [el("dt", {}, "Transfer"), el("dd", { id: "job-transfer" },
          `${job.transfer.mode}${job.transfer.dry_run ? " (dry run)" : ""}: ${job.source_endpoint}:${job.transfer.folder || "/"} → ${job.destination}:${job.transfer.dest_folder || "/"}`)] : null,
        el("dt", {}, "Attempt"), el("dd", {}, String(job.attempt)),
        el("dt", {}, "Created"), el("dd", {}, `${when(job.created_at)}${job.created_by ? ` by ${job.created_by}` : ""}`),
        job.retry_of ? [el("dt", {}, "Retry of"), el("dd", {}, el("a", { href: `#/jobs/${job.retry_of}` }, job.retry_of))] : null,
        el("dt", {}, "Progress"), el("dd", {}, progressBar(job, "progress") || (job.result ? `${job.result.files} files, ${bytes(job.result.bytes)} in ${(job.result.duration_ms / 1000).toFixed(1)} s` : "—")),
        job.error ? [el("dt", {}, "Error"), el("dd", { id: "job-error" }, `${job.error_class || ""} ${job.error}`)] : null,
        job.cancel_requested_by ? [el("dt", {}, "Cancel asked by"), el("dd", {}, job.cancel_requested_by)] : null,
        job.parent_job ? [el("dt", {}, "Previous step"), el("dd", {}, el("a", { id: "parent-job", href: `#/jobs/${job.parent_job}` }, job.parent_job))] : null,
        job.next_job ? [el("dt", {}, "Next step"), el("dd", {}, el("a", { id: "next-job", href: `#/jobs/${job.next_job}` }, job.next_job))] : null,
        job.chain_error ? [el("dt", {}, "Chain stopped"), el("dd", { id: "chain-error" }, job.chain_error)] : null,
        (job.notifications || []).length ? [el("dt", {}, "Notifications"), el("dd", {}, el("ul", { id: "notifications" },
          job.notifications.map((n) => el("li", { "data-state": n.state },
            `${n.target}: ${n.state} after ${n.attempts} attempt${n.attempts === 1 ? "" : "s"}${n.http_status ? ` (HTTP ${n.http_status})` : ""}${n.error ? ` — ${n.error}` : ""}`))))] : null,
        job.transfer ? null : [el("dt", {}, `Files (${job.file_count})`), el("dd", {}, el("ul", {}, files))]),
      el("div", { class: "actions" },
        ["queued", "running"].includes(job.state) ? el("button", { id: "cancel", class: "danger", onclick: act("cancel") }, "Cancel") : null,
        ["failed", "cancelled"].includes(job.state) ? el("button", { id: "retry", class: "primary", onclick: act("retry") }, "Retry") : null)));
    if (job.log_key && !logShown) {
      try { logBox.textContent = await api("GET", `/jobs/${encodeURIComponent(id)}/log`); logShown = true; } catch (err) {
        logBox.textContent = err.message;
      }
    } else if (!job.log_key) {
      logBox.textContent = TERMINAL.includes(job.state) ? "No log was uploaded for this job." : "The log is uploaded when the attempt ends.";
    }
    if (job.report_key && !reportShown) {
      try {
        const report = await api("GET", `/jobs/${encodeURIComponent(id)}/report`);
        reportBox.replaceChildren(el("div", { class: "scroll" }, el("table", {},
          el("thead", {}, el("tr", {}, ["File", "Outcome", "Size", "MD5", "Destination", "Error"].map((h) => el("th", {}, h)))),
          el("tbody", {}, report.files.slice(0, 500).map((f) => el("tr", { "data-outcome": f.outcome },
            el("td", { class: "wrap" }, f.key), el("td", {}, f.outcome), el("td", {}, bytes(f.size)),
            el("td", {}, el("code", {}, f.md5 || "—")), el("td", { class: "wrap" }, f.dest_path),
            el("td", { class: "wrap" }, f.error || "")))))));
        reportShown = true;
      } catch (err) { reportBox.replaceChildren(errorBox(err)); }
    } else if (!job.report_key) {
      reportBox.replaceChildren(el("p", { class: "muted" }, TERMINAL.includes(job.state) ? "No report was written for this job." : "Written when the job ends."));
    }
    // A finished job changes no more once what it has is shown.
    const settled = (logShown || !job.log_key) && (reportShown || !job.report_key)
      && !(job.notifications || []).some((n) => n.state === "retrying");
    if (TERMINAL.includes(job.state) && settled) { clearInterval(timer); timer = null; }
  };
  await refresh();
  timer = setInterval(refresh, 1500);
}

async function newJobView() {
  const problem = el("div");
  const templates = (await api("GET", "/templates")).templates.filter((t) => t.trigger && t.trigger.type === "s3");
  const select = el("select", { id: "job-template" }, templates.map((t) => el("option", { value: t.id }, t.id)));
  const keys = el("textarea", { id: "job-keys", placeholder: "one object key per line", class: "short" });
  const submit = async (ev) => {
    ev.preventDefault();
    const body = { template_id: select.value, keys: keys.value.split("\n").map((k) => k.trim()).filter(Boolean) };
    try {
      const job = await api("POST", "/jobs", JSON.stringify(body));
      location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
    } catch (err) { problem.replaceChildren(errorBox(err, "job-error")); }
  };
  show(el("h1", {}, "New manual job"), el("form", { class: "card", onsubmit: submit },
    el("p", {}, el("label", {}, "Template ", select)), keys, problem,
    el("div", { class: "actions" }, el("button", { class: "primary", type: "submit" }, "Create job"))));
}

// ---------------------------------------------------------------- transfers

const MODES = {
  copy: "Copies new and changed files into the destination folder. Nothing is deleted anywhere.",
  sync: "Makes the destination folder a mirror of the source: copies new and changed files, then deletes (or moves to the backup folder) the files the source no longer has. It stops before changing anything if it would delete more than the limit.",
  move: "Copies new and changed files, then removes each source file once its copy is verified. A file that fails stays at the source.",
};

function lines(text) { return text.split(/[\n,]/).map((t) => t.trim()).filter(Boolean); }

// Saved transfers (templates of trigger type `manual`), each with Run now.
function savedTransfers(templates, problem) {
  const saved = templates.filter((t) => t.trigger && t.trigger.type === "manual");
  if (!saved.length) return el("p", { class: "hint" }, "No saved transfers: an admin saves one as a template of trigger type \"manual\".");
  return el("div", { class: "scroll" }, el("table", { id: "saved-transfers" },
    el("thead", {}, el("tr", {}, ["Id", "What", "To", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, saved.map((t) => el("tr", { "data-template": t.id },
      el("td", {}, el("a", { href: `#/templates/${encodeURIComponent(t.id)}` }, t.id)),
      el("td", { class: "wrap" }, describeTrigger(t.trigger)),
      el("td", { class: "wrap" }, `${t.destination.pool} / ${t.destination.endpoint} / ${t.destination.path}`),
      el("td", {}, t.enabled === false ? "disabled" : el("button", { class: "run-now", onclick: runNow(t.id, problem) }, "Run now")))))));
}

async function newTransferView() {
  const problem = el("div");
  const executors = (await api("GET", "/executors")).executors;
  const templates = (await api("GET", "/templates")).templates;
  // What each pool's executors publish: endpoint name -> {type, cloud}.
  const pools = {};
  for (const e of executors) {
    const offered = pools[e.pool] = pools[e.pool] || {};
    for (const ep of e.endpoints || []) offered[ep.name] = ep;
  }
  const names = Object.keys(pools).filter((p) => Object.keys(pools[p]).length).sort();
  if (!names.length) {
    show(el("h1", {}, "New transfer"), el("p", { class: "card" },
      "No executor has published its endpoints yet: they do with their first heartbeat."));
    return;
  }
  const pool = el("select", { id: "tr-pool" }, names.map((p) => el("option", { value: p }, p)));
  const source = el("select", { id: "tr-source" });
  const dest = el("select", { id: "tr-dest" });
  const folder = el("input", { id: "tr-folder", placeholder: "folder under the endpoint's root (empty: the root)" });
  const destFolder = el("input", { id: "tr-dest-folder", placeholder: "folder under the endpoint's root" });
  const include = el("input", { id: "tr-include", placeholder: "e.g. **/*.csv (comma-separated; empty: every file)" });
  const exclude = el("input", { id: "tr-exclude", placeholder: "e.g. tmp/**" });
  const recursive = el("input", { id: "tr-recursive", type: "checkbox", checked: true });
  const mode = el("select", { id: "tr-mode" }, Object.keys(MODES).map((m) => el("option", { value: m }, m)));
  const modeText = el("p", { id: "tr-mode-text", class: "hint" });
  const maxDelete = el("input", { id: "tr-max-delete", type: "number", min: "0", value: "100" });
  const backup = el("input", { id: "tr-backup", placeholder: "optional: move deletions here instead" });
  const verify = el("select", { id: "tr-verify" }, ["size", "hash"].map((v) => el("option", { value: v }, v)));
  const syncOnly = el("div", { id: "tr-sync-options" },
    el("p", {}, el("label", {}, "Delete at most ", maxDelete, " files")),
    el("p", {}, el("label", {}, "Backup folder ", backup)));
  const option = (name, ep) => el("option", { value: name }, `${name} (${ep.type}, cloud: ${ep.cloud})`);
  const fill = () => {
    const offered = pools[pool.value] || {};
    const all = Object.keys(offered).sort();
    source.replaceChildren(...all.filter((n) => ["read", "read-write"].includes(offered[n].cloud)).map((n) => option(n, offered[n])));
    dest.replaceChildren(...all.filter((n) => ["write", "read-write"].includes(offered[n].cloud)).map((n) => option(n, offered[n])));
  };
  const describe = () => {
    modeText.textContent = MODES[mode.value];
    syncOnly.hidden = mode.value !== "sync";
  };
  pool.addEventListener("change", fill);
  mode.addEventListener("change", describe);
  fill();
  describe();
  const start = (dryRun) => async (ev) => {
    ev.preventDefault();
    const body = {
      source: { pool: pool.value, endpoint: source.value, folder: folder.value, include: lines(include.value),
        exclude: lines(exclude.value), recursive: recursive.checked },
      destination: { pool: pool.value, endpoint: dest.value, folder: destFolder.value },
      mode: mode.value, dry_run: dryRun, delivery: { verify: verify.value },
    };
    if (mode.value === "sync") {
      body.max_delete = Number(maxDelete.value);
      if (backup.value.trim()) body.backup_folder = backup.value.trim();
    }
    try {
      const job = await api("POST", "/transfers", JSON.stringify(body));
      location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
    } catch (err) { problem.replaceChildren(errorBox(err, "transfer-error")); }
  };
  show(el("h1", {}, "New transfer"), el("form", { id: "transfer", class: "card", onsubmit: start(false) },
    el("p", {}, el("label", {}, "Pool ", pool)),
    el("fieldset", {}, el("legend", {}, "From"),
      el("p", {}, el("label", {}, "Endpoint ", source)), el("p", {}, el("label", {}, "Folder ", folder)),
      el("p", {}, el("label", {}, "Include ", include)), el("p", {}, el("label", {}, "Exclude ", exclude)),
      el("p", {}, el("label", {}, recursive, " and its sub-folders"))),
    el("fieldset", {}, el("legend", {}, "To"),
      el("p", {}, el("label", {}, "Endpoint ", dest)), el("p", {}, el("label", {}, "Folder ", destFolder))),
    el("p", {}, el("label", {}, "Mode ", mode)), modeText, syncOnly,
    el("p", {}, el("label", {}, "Verify each file by ", verify)),
    problem,
    el("div", { class: "actions" },
      el("button", { id: "tr-dry-run", type: "button", onclick: start(true) }, "Dry run: list what it would do"),
      el("button", { id: "tr-start", class: "primary", type: "submit" }, "Start transfer"))),
    el("h2", {}, "Saved transfers"), savedTransfers(templates, problem));
}

// ---------------------------------------------------------------- templates

async function templatesView() {
  const data = await api("GET", "/templates");
  const problem = el("div");
  show(el("h1", {}, "Templates"), el("div", { class: "toolbar" }, el("a", { href: "#/templates/new", id: "new-template" }, "New template")),
    problem,
    el("div", { class: "scroll" }, el("table", { id: "templates" },
      el("thead", {}, el("tr", {}, ["Id", "Trigger", "Destination", "Enabled", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.templates.map((t) => el("tr", { "data-template": t.id },
        el("td", {}, el("a", { href: `#/templates/${encodeURIComponent(t.id)}` }, t.id)),
        el("td", { class: "wrap" }, t.invalid ? `invalid: ${t.invalid}` : describeTrigger(t.trigger)),
        el("td", { class: "wrap" }, t.destination ? `${t.destination.pool} / ${t.destination.endpoint} / ${t.destination.path}` : ""),
        el("td", {}, t.enabled === false ? "no" : "yes"),
        el("td", {}, !t.invalid && t.enabled !== false && t.trigger && RUNNABLE.includes(t.trigger.type)
          ? el("button", { class: "run-now", onclick: runNow(t.id, problem) }, "Run now") : null)))))));
}

function describeTrigger(tr) {
  if (!tr) return "";
  if (tr.type === "s3") return `s3://${tr.bucket}/${tr.key_glob}`;
  if (tr.type === "manual") return `saved transfer: ${tr.mode || "copy"} from ${tr.source}:${tr.folder || "/"}`;
  if (tr.type === "watch" || tr.type === "schedule") return `${tr.type} ${tr.source}:${tr.folder || "/"}${tr.cron ? ` (${tr.cron})` : ""}`;
  return `${tr.type}`;
}

// Templates an operator can run now: saved transfers, and watch and schedule folders.
const RUNNABLE = ["manual", "watch", "schedule"];

function runNow(id, problem) {
  return async () => {
    try {
      const job = await api("POST", `/templates/${encodeURIComponent(id)}/run`);
      location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
    } catch (err) { problem.replaceChildren(errorBox(err, "run-error")); }
  };
}

const NEW_TEMPLATE = {
  id: "new-template",
  description: "",
  trigger: { type: "s3", bucket: "source-bucket", key_glob: "incoming/**" },
  destination: { pool: "default", endpoint: "local-disk", path: "{key}" },
};

async function templateView(id) {
  const isNew = id === "new";
  const problem = el("div");
  const text = el("textarea", { id: "template-json", spellcheck: "false" });
  if (isNew) text.value = JSON.stringify(NEW_TEMPLATE, null, 2);
  else text.value = JSON.stringify(await api("GET", `/templates/${encodeURIComponent(id)}`), null, 2);
  const note = el("div");
  const save = async () => {
    problem.replaceChildren(); note.replaceChildren();
    let parsed;
    try { parsed = JSON.parse(text.value); } catch (err) {
      problem.replaceChildren(errorBox(new Error(`not JSON: ${err.message}`), "template-error")); return;
    }
    try {
      const target = isNew ? parsed.id : id;
      await api("PUT", `/templates/${encodeURIComponent(target)}`, JSON.stringify(parsed));
      note.replaceChildren(el("div", { class: "note", id: "template-saved" }, `Saved ${target}.`));
      if (isNew) location.hash = `#/templates/${encodeURIComponent(target)}`;
    } catch (err) { problem.replaceChildren(errorBox(err, "template-error")); }
  };
  const remove = async () => {
    if (!confirm(`Delete template ${id}?`)) return;
    try { await api("DELETE", `/templates/${encodeURIComponent(id)}`); location.hash = "#/templates"; } catch (err) {
      problem.replaceChildren(errorBox(err, "template-error"));
    }
  };
  show(el("h1", {}, isNew ? "New template" : `Template ${id}`),
    el("div", { class: "card" }, text, problem, note,
      el("div", { class: "actions" },
        el("button", { id: "save-template", class: "primary", onclick: save }, "Save"),
        isNew ? null : el("button", { class: "danger", onclick: remove }, "Delete"))),
    dryRunCard());
}

function dryRunCard() {
  const bucket = el("input", { id: "dry-bucket", placeholder: "bucket" });
  const key = el("input", { id: "dry-key", placeholder: "key" });
  const out = el("div", { id: "dry-result" });
  const run = async (ev) => {
    ev.preventDefault();
    try {
      const res = await api("POST", "/templates/dry-run", JSON.stringify({ bucket: bucket.value, key: key.value }));
      out.replaceChildren(res.matches.length ? el("ul", {}, res.matches.map((m) => el("li", {},
        `${m.template_id} → ${m.pool} / ${m.endpoint} / ${m.dest_path || `rejected: ${m.rejected}`}`))) :
        el("p", { class: "muted" }, "No template takes this object."));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  return el("form", { class: "card", onsubmit: run }, el("h2", {}, "Dry run: where would an object go?"),
    el("div", { class: "toolbar" }, bucket, key, el("button", { type: "submit" }, "Try")), out);
}

// ---------------------------------------------------------------- executors and audit

async function executorsView() {
  const table = el("div", { class: "scroll" });
  const endpoints = el("div", { class: "scroll" });
  show(el("h1", {}, "Executors"), table,
    el("h2", {}, "Endpoints"),
    el("p", { class: "hint" }, "What each pool's executors publish. An admin can ask one executor of the pool to test an endpoint: it writes, lists, reads and deletes a probe file there."),
    endpoints);
  const refresh = async () => {
    const data = await api("GET", "/executors");
    table.replaceChildren(el("table", { id: "executors" },
      el("thead", {}, el("tr", {}, ["Executor", "Pool", "Status", "Last seen", "Version", "Running jobs"].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.executors.map((e) => el("tr", { "data-executor": e.executor_id },
        el("td", {}, e.executor_id), el("td", {}, e.pool || ""),
        el("td", {}, badge(e.online ? "online" : "offline")),
        el("td", {}, `${when(e.last_seen)}${e.silent_seconds !== undefined ? ` (${e.silent_seconds}s ago)` : ""}`),
        el("td", {}, e.version || ""), el("td", {}, e.running_jobs ?? ""))))));
    // Built once: a test's answer stays while the executors refresh.
    if (!endpoints.firstChild) endpoints.replaceChildren(endpointTable(data.executors));
  };
  await refresh();
  timer = setInterval(() => refresh().catch(() => {}), 5000);
}

// Each pool's published endpoints, each with a Test button and the answer of its last test.
function endpointTable(executors) {
  const rows = new Map();
  for (const e of executors) {
    for (const ep of e.endpoints || []) rows.set(`${e.pool}/${ep.name}`, { pool: e.pool, ep });
  }
  if (!rows.size) return el("p", {}, "No executor has published its endpoints yet.");
  return el("table", { id: "endpoints" },
    el("thead", {}, el("tr", {}, ["Pool", "Endpoint", "Type", "Cloud", "", "Last test"].map((h) => el("th", {}, h)))),
    el("tbody", {}, [...rows.values()].sort((a, b) => `${a.pool}/${a.ep.name}`.localeCompare(`${b.pool}/${b.ep.name}`)).map(({ pool, ep }) => {
      const answer = el("td", { class: "wrap test-answer" });
      const button = el("button", { class: "test-endpoint", type: "button" }, "Test");
      button.addEventListener("click", () => testEndpoint(pool, ep.name, answer, button));
      return el("tr", { "data-pool": pool, "data-endpoint": ep.name },
        el("td", {}, pool), el("td", {}, ep.name), el("td", {}, ep.type), el("td", {}, ep.cloud),
        el("td", {}, button), answer);
    })));
}

async function testEndpoint(pool, name, answer, button) {
  button.disabled = true;
  answer.dataset.state = "queued";
  answer.replaceChildren("testing…");
  try {
    const started = await api("POST", `/pools/${encodeURIComponent(pool)}/endpoints/${encodeURIComponent(name)}/test`);
    for (let i = 0; i < 90; i++) {
      const t = await api("GET", `/endpoint-tests/${encodeURIComponent(started.test_id)}`);
      if (t.state !== "queued") {
        answer.dataset.state = t.state;
        answer.replaceChildren(t.state === "passed"
          ? el("span", {}, badge("passed"), ` in ${(t.elapsed_ms / 1000).toFixed(1)} s by ${t.executor_id} (${t.location})`)
          : el("span", {}, badge("failed"), ` at ${t.step || "?"} [${t.problem || "other"}] by ${t.executor_id}: ${t.message || ""}`,
            el("br"), el("strong", {}, "Fix: "), t.hint || ""));
        return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    answer.dataset.state = "timeout";
    answer.replaceChildren("No executor of the pool answered within 90 s: is one online?");
  } catch (err) {
    answer.dataset.state = "error";
    answer.replaceChildren(errorBox(err));
  } finally {
    button.disabled = false;
  }
}

async function auditView() {
  const data = await api("GET", "/audit?limit=200");
  show(el("h1", {}, "Audit log"), el("div", { class: "scroll" }, el("table", { id: "audit" },
    el("thead", {}, el("tr", {}, ["When", "Who", "Role", "Call", "Answer", "Target"].map((h) => el("th", {}, h)))),
    el("tbody", {}, data.entries.map((e) => el("tr", {},
      el("td", {}, when(e.at)), el("td", {}, e.principal), el("td", {}, e.role),
      el("td", { class: "wrap" }, `${e.method} ${e.path}`), el("td", {}, String(e.status)), el("td", {}, e.target || "")))))));
}

// ---------------------------------------------------------------- routing

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  for (const undo of leaving.splice(0)) undo();
  // A hosted sign-in (implicit flow) returns with #id_token=…
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (fragment.get("id_token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("id_token"));
    history.replaceState(null, "", "#/dashboard");
  }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const signedIn = Boolean(token());
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  if (!signedIn || path === "/sign-in") {
    document.getElementById("who").textContent = "";
    return signInView();
  }
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (!document.getElementById("who").textContent) {
      const me = await api("GET", "/me");
      document.getElementById("who").textContent = `${me.name} · ${me.role}`;
    }
    if (parts[0] === "jobs" && parts[1] === "new") return await newJobView();
    if (parts[0] === "transfers") return await newTransferView();
    if (parts[0] === "jobs" && parts[1]) return await jobView(parts[1]);
    if (parts[0] === "templates" && parts[1]) return await templateView(parts[1]);
    if (parts[0] === "templates") return await templatesView();
    if (parts[0] === "executors") return await executorsView();
    if (parts[0] === "audit") return await auditView();
    if (parts[0] === "jobs") return await jobsView(params);
    return await dashboardView(params);
  } catch (err) {
    if (err.status !== 401) show(errorBox(err));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  document.getElementById("who").textContent = "";
  signOut();
});
window.addEventListener("hashchange", route);
route();
