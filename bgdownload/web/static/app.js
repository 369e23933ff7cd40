// bgdownload: the Active Downloads page. No build step, no framework.
//
// State always comes from the server: the list on load (and after every
// reconnect, to close any gap), then live events from GET /api/v1/events.
// When EventSource cannot be used (refused, proxy trouble) the page polls.
"use strict";

(() => {
  const TOKEN_KEY = "bgdownload.token";
  const POLL_MS = 2000;
  const RECONNECT_MS = 10000;
  const LIST_LIMIT = 100;
  const ACTIONS = {
    waiting: ["pause", "cancel"],
    active: ["pause", "cancel"],
    paused: ["resume", "cancel"],
    completed: ["file", "delete"],
    failed: ["retry", "delete"],
    cancelled: ["retry", "delete"],
  };
  const LIVE = new Set(["waiting", "active", "paused"]);
  // Where the API lives: /api/v1 here; a host page (the Jupyter extension) names
  // its own with <meta name="bgdownload-api">, and asks for Jupyter's XSRF header
  // on mutating calls with <meta name="bgdownload-xsrf"> (the _xsrf cookie wins).
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content;
  const API = (meta("bgdownload-api") || "/api/v1").replace(/\/$/, "");
  const XSRF = meta("bgdownload-xsrf");
  const xsrfToken = () =>
    (document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/) || [])[1] || XSRF;

  const $ = (id) => document.getElementById(id);
  const jobs = new Map(); // id -> public job object (docs/api.md §1)
  // `bgdownload up` prints the page's address with the local stack's token in the
  // fragment (#token=…), which browsers never send: keep it, then drop it from the
  // address bar and history so it is not bookmarked or shared by accident.
  const linkToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (linkToken) {
    localStorage.setItem(TOKEN_KEY, linkToken);
    history.replaceState(null, "", location.pathname + location.search);
  }
  let token = linkToken || localStorage.getItem(TOKEN_KEY) || "";
  let source = null;
  let lastEventId = null;
  let pollTimer = null;
  let reconnectTimer = null;
  let askingToken = false;

  // ---------------------------------------------------------------- formatting

  function formatBytes(n) {
    if (n == null) return "?";
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    let value = n;
    while (value >= 1000 && i < units.length - 1) { value /= 1000; i += 1; }
    return i === 0 ? `${value} B` : `${value.toFixed(1)} ${units[i]}`;
  }

  function formatEta(seconds) {
    if (seconds == null) return "";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s left`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s left`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min left`;
  }

  // Bidi controls and invisible marks would let a URL or name display as something
  // else (a right-to-left override turns "gpj.exe" around): show them as \u escapes.
  const BIDI = /[\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function visible(text) {
    return String(text).replace(BIDI, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  function displayName(job) {
    if (job.filename) return job.filename;
    if (job.files && job.files.length) return `${job.files.length} files`;
    try {
      const path = new URL(job.url).pathname.split("/").filter(Boolean).pop();
      return path ? decodeURIComponent(path) : new URL(job.url).host;
    } catch (e) {
      return job.url || job.id;
    }
  }

  function sourceLine(job) {
    if (job.url) return job.url;
    const files = job.files || [];
    if (!files.length) return "";
    return files.length > 1 ? `${files[0].url} and ${files.length - 1} more` : files[0].url;
  }

  function statsLine(job) {
    const p = job.progress || {};
    const sizes = p.total != null
      ? `${formatBytes(p.loaded)} / ${formatBytes(p.total)}`
      : formatBytes(p.loaded || 0);
    switch (job.state) {
      case "active": {
        const parts = [sizes, `${formatBytes(p.speed || 0)}/s`];
        if (p.eta != null) parts.push(formatEta(p.eta));
        return parts.join(" · ");
      }
      case "waiting":
        return job.attempts > 0 ? `Retrying (attempt ${job.attempts + 1}) · ${sizes}` : "Queued";
      case "paused":
        return `Paused at ${sizes}${p.percent != null ? ` (${Math.floor(p.percent)} %)` : ""}`;
      case "completed":
        return `${formatBytes(p.total != null ? p.total : p.loaded)} · done`;
      case "cancelled":
        return "Cancelled";
      default:
        return sizes;
    }
  }

  // ---------------------------------------------------------------- rendering

  function rowFor(id) {
    return document.querySelector(`.job[data-job-id="${CSS.escape(id)}"]`);
  }

  function createRow(job) {
    const row = $("job-row").content.firstElementChild.cloneNode(true);
    row.dataset.jobId = job.id;
    row.querySelectorAll("[data-action]").forEach((el) => {
      el.addEventListener("click", (event) => onAction(event, job.id, el.dataset.action));
    });
    // newest first: place before the first row created earlier than this one
    const list = $("jobs");
    const later = [...list.children].find((el) => {
      const other = jobs.get(el.dataset.jobId);
      return other && other.created_at < job.created_at;
    });
    list.insertBefore(row, later || null);
    return row;
  }

  function render(job) {
    const row = rowFor(job.id) || createRow(job);
    const p = job.progress || {};
    row.dataset.state = job.state;
    row.querySelector(".job-name").textContent = visible(displayName(job));
    row.querySelector(".job-name").title = visible(displayName(job));
    row.querySelector(".job-url").textContent = visible(sourceLine(job));
    const badge = row.querySelector(".badge");
    badge.textContent = job.state;
    badge.dataset.state = job.state;

    const bar = row.querySelector(".bar");
    const fill = row.querySelector(".bar-fill");
    let percent = p.percent;
    if (job.state === "completed") percent = 100;
    bar.dataset.percent = percent == null ? "" : String(percent);
    if (percent == null && job.state === "active") {
      bar.setAttribute("data-indeterminate", "");
    } else {
      bar.removeAttribute("data-indeterminate");
      fill.style.width = `${Math.max(0, Math.min(100, percent || 0))}%`;
    }
    const stats = statsLine(job);
    row.querySelector(".job-stats").textContent =
      percent != null && job.state === "active" ? `${Math.floor(percent)} % · ${stats}` : stats;

    const error = row.querySelector(".job-error");
    // a cancelled job's error only repeats its badge
    const showError = job.error && (job.state === "failed" || job.state === "waiting");
    error.hidden = !showError;
    error.textContent = showError
      ? `${job.state === "waiting" ? "Last attempt failed" : "Failed"}: ${job.error.message}`
      : "";

    const allowed = ACTIONS[job.state] || [];
    row.querySelectorAll("[data-action]").forEach((el) => {
      el.hidden = !allowed.includes(el.dataset.action);
    });
    const link = row.querySelector('[data-action="file"]');
    link.href = `${API}/downloads/${encodeURIComponent(job.id)}/file`;
    link.setAttribute("download", job.filename || "");
  }

  function renderSummary() {
    const counts = {};
    for (const job of jobs.values()) counts[job.state] = (counts[job.state] || 0) + 1;
    const parts = [];
    for (const state of ["active", "waiting", "paused", "completed", "failed", "cancelled"]) {
      if (counts[state]) parts.push(`${counts[state]} ${state}`);
    }
    $("summary").textContent = parts.join(" · ");
    $("empty").hidden = jobs.size > 0;
    const active = (counts.active || 0) + (counts.waiting || 0);
    document.title = active ? `(${active}) Active Downloads · bgdownload` : "Active Downloads · bgdownload";
  }

  function upsert(job) {
    jobs.set(job.id, job);
    render(job);
    renderSummary();
  }

  function forget(id) {
    jobs.delete(id);
    const row = rowFor(id);
    if (row) row.remove();
    renderSummary();
  }

  function setMode(mode, label) {
    const el = $("connection");
    el.dataset.mode = mode;
    el.querySelector(".label").textContent = label;
  }

  // ---------------------------------------------------------------- server calls

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const init = { method, headers };
    if (XSRF !== undefined && method !== "GET") headers["X-XSRFToken"] = xsrfToken();
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      if (response.status === 401) askToken();
      throw new ApiError(response.status, error.code, error.message || `HTTP ${response.status}`);
    }
    const position = response.headers.get("X-Last-Event-ID");
    if (position && data) data.position = position;
    return data;
  }

  async function refresh() {
    const page = await api("GET", `${API}/downloads?limit=${LIST_LIMIT}`);
    // the stream position taken before this list: replaying from it leaves no gap
    if (!lastEventId && page.position) lastEventId = page.position;
    const seen = new Set(page.items.map((job) => job.id));
    for (const id of [...jobs.keys()]) if (!seen.has(id)) forget(id);
    // oldest first, so each new row lands above the ones before it
    for (const job of [...page.items].reverse()) upsert(job);
  }

  async function onAction(event, id, action) {
    event.preventDefault();
    const button = event.currentTarget;
    try {
      if (action === "file") return await saveFile(id);
      button.disabled = true;
      if (action === "delete") {
        await api("DELETE", `${API}/downloads/${encodeURIComponent(id)}`);
        forget(id);
      } else {
        upsert(await api("POST", `${API}/downloads/${encodeURIComponent(id)}/${action}`));
      }
    } catch (error) {
      showFormError(`${action} failed: ${error.message}`);
      if (error.status === 404) forget(id);
    } finally {
      button.disabled = false;
    }
  }

  async function saveFile(id) {
    const url = `${API}/downloads/${encodeURIComponent(id)}/file`;
    if (!token) {
      window.location.href = url; // the server sends it as an attachment
      return;
    }
    // a link cannot carry the Authorization header: fetch, then hand the browser a blob
    const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) throw new ApiError(response.status, "", `HTTP ${response.status}`);
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = (jobs.get(id) || {}).filename || "download";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  }

  function showFormError(message) {
    const el = $("form-error");
    el.textContent = message;
    el.hidden = !message;
  }

  // ---------------------------------------------------------------- live updates

  function streamUrl() {
    const params = new URLSearchParams();
    if (token) params.set("access_token", token);
    if (lastEventId) params.set("last_event_id", lastEventId);
    const query = params.toString();
    return `${API}/events${query ? `?${query}` : ""}`;
  }

  function onEvent(event) {
    if (event.lastEventId) lastEventId = event.lastEventId;
    const data = JSON.parse(event.data);
    if (event.type === "progress") {
      const job = jobs.get(data.id);
      if (!job) {
        // a job this page has not seen yet (created elsewhere): fetch it whole
        api("GET", `${API}/downloads/${encodeURIComponent(data.id)}`).then(upsert, () => {});
        return;
      }
      const { id, state, files, ...progress } = data;
      upsert({ ...job, state, progress, files: files ? mergeFiles(job.files, files) : job.files });
    } else {
      upsert(data); // snapshot and state events carry the whole job
    }
  }

  function mergeFiles(known, updates) {
    return (known || []).map((file, i) => {
      const u = updates[i];
      return u ? { ...file, state: u.state, progress: u } : file;
    });
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (source) source.close();
    if (typeof EventSource === "undefined") return startPolling();
    setMode("connecting", "Connecting…");
    source = new EventSource(streamUrl());
    source.addEventListener("open", () => {
      setMode("live", "Live");
      stopPolling();
      // jobs that were forgotten (deleted, expired) while the page was away
      refresh().catch(() => {});
    });
    for (const name of ["snapshot", "progress", "state"]) source.addEventListener(name, onEvent);
    source.addEventListener("error", () => {
      if (source && source.readyState === EventSource.CLOSED) {
        // refused for good (401, wrong content type): poll, and try again later
        source = null;
        startPolling();
        reconnectTimer = setTimeout(connect, RECONNECT_MS);
      } else {
        setMode("connecting", "Reconnecting…"); // the browser retries by itself
        startPolling();
      }
    });
  }

  function startPolling() {
    if (pollTimer) return;
    setMode("polling", "Polling");
    const tick = () => refresh().then(
      () => { if (!source || source.readyState !== EventSource.OPEN) setMode("polling", "Polling"); },
      (error) => { if (error.status !== 401) setMode("offline", "Offline"); },
    );
    tick();
    pollTimer = setInterval(tick, POLL_MS);
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  // ---------------------------------------------------------------- token

  function askToken() {
    $("token-button").hidden = false;
    if (askingToken) return;
    askingToken = true;
    const dialog = $("token-dialog");
    $("token-input").value = token;
    if (typeof dialog.showModal === "function") dialog.showModal();
  }

  function onTokenClosed() {
    askingToken = false;
    const dialog = $("token-dialog");
    if (dialog.returnValue !== "save") return;
    token = $("token-input").value.trim();
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    start();
  }

  // ---------------------------------------------------------------- start

  async function onSubmit(event) {
    event.preventDefault();
    showFormError("");
    const url = $("url").value.trim();
    const filename = $("filename").value.trim();
    const body = filename ? { url, filename } : { url };
    const button = $("start");
    button.disabled = true;
    try {
      upsert(await api("POST", `${API}/downloads`, body));
      $("url").value = "";
      $("filename").value = "";
    } catch (error) {
      showFormError(error.message);
    } finally {
      button.disabled = false;
    }
  }

  function start() {
    refresh().then(connect, (error) => {
      if (error.status === 401) setMode("offline", "Token needed");
      else { setMode("offline", "Offline"); startPolling(); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("create-form").addEventListener("submit", onSubmit);
    $("token-dialog").addEventListener("close", onTokenClosed);
    $("token-button").addEventListener("click", askToken);
    $("token-button").hidden = !token;
    renderSummary();
    start();
  });
})();
