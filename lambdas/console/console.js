// PBS Rclone operator console: a page per hash route, data from the API with the signed-in
// token. Text from the API is only ever set as textContent, never parsed as HTML.
"use strict";

// The console is at <base>/console (any stage or proxy prefix before it); the API beside it.
const API = `${location.pathname.replace(/\/console\/?$/, "")}/api/v1`;
const TOKEN_KEY = "pbs-token";
const TERMINAL = ["succeeded", "failed", "cancelled"];
let timer = null;

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
      go(location.hash && location.hash !== "#/sign-in" ? location.hash : "#/jobs");
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

// ---------------------------------------------------------------- jobs

async function jobsView(params) {
  const state = params.get("state") || "";
  const prefix = params.get("key_prefix") || "";
  const jobsHash = (st, kp) => {
    const q = new URLSearchParams();
    if (st) q.set("state", st);
    if (kp) q.set("key_prefix", kp);
    return q.toString() ? `#/jobs?${q}` : "#/jobs";
  };
  const select = el("select", { id: "state-filter", onchange: (e) => {
    location.hash = jobsHash(e.target.value, prefix);
  } }, el("option", { value: "" }, "all states"),
  ...["queued", "running", "succeeded", "failed", "cancelled"].map((s) =>
    el("option", { value: s, selected: s === state }, s)));
  const search = el("input", { id: "key-search", type: "search", value: prefix, placeholder: "invoices/2026-11/",
    "aria-label": "File name starts with" });
  const searchForm = el("form", { id: "key-search-form", role: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = jobsHash(state, search.value.trim());
  } }, el("label", {}, "File ", search), el("button", { type: "submit" }, "Find"));
  const body = el("tbody");
  const table = el("div", { class: "scroll" }, el("table", { id: "jobs" },
    el("thead", {}, el("tr", {}, ["State", "File", "Template", "Files", "Progress", "Created", "Executor"].map((h) => el("th", {}, h)))),
    body));
  const problem = el("div");
  show(el("h1", {}, "Jobs"), el("div", { class: "toolbar" }, el("label", {}, "State ", select), searchForm,
    el("a", { href: "#/jobs/new" }, "New manual job")), problem, table);
  // A job is named by its first file (and how many more), its id kept as the link's title.
  const name = (j) => j.first_key
    ? `${j.first_key}${j.file_count > 1 ? ` +${j.file_count - 1} more` : ""}`
    : j.job_id;
  const refresh = async () => {
    try {
      const q = new URLSearchParams({ limit: "100" });
      if (state) q.set("state", state);
      if (prefix) q.set("key_prefix", prefix);
      const data = await api("GET", `/jobs?${q}`);
      body.replaceChildren(...data.jobs.map((j) => el("tr", { "data-job": j.job_id, "data-state": j.state },
        el("td", { class: "state" }, badge(j.state)),
        el("td", { class: "id" }, el("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}`, title: j.job_id }, name(j))),
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
  // A hosted sign-in (implicit flow) returns with #id_token=…
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (fragment.get("id_token")) {
    sessionStorage.setItem(TOKEN_KEY, fragment.get("id_token"));
    history.replaceState(null, "", "#/jobs");
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
    return await jobsView(params);
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
