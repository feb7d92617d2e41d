// Live job progress: one websocket to /ws/jobs/, updating every element with data-job-id.
// The server sends {"type": "job", "job": {...}} for the user's own jobs and for every job this
// page subscribes to; updates carry a sequence number, so stale ones are ignored.
// Jobs that report points (loss and accuracy per epoch) have them plotted in their
// [data-job-metrics] card, redrawn as points arrive.

import { drawMetrics } from "./chart.js";

const STATE_LABELS = {queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled"};
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const lastSeq = new Map();
const drawnMetrics = new WeakMap();

// Floor, so that 100 % means done (99.9 % of the bytes is not done yet).
function percent(job) { return Math.floor((job.progress || 0) * 100); }

function setField(root, name, update) {
  root.querySelectorAll(`[data-field="${name}"]`).forEach(update);
}

// Redraw only when the points changed (most updates are progress only); show the card once there are some.
function updateMetrics(el, points) {
  if (!Array.isArray(points)) return;
  const signature = `${points.length}:${JSON.stringify(points[points.length - 1] ?? null)}`;
  if (drawnMetrics.get(el) === signature) return;
  drawnMetrics.set(el, signature);
  el.hidden = points.length === 0;
  if (points.length) drawMetrics(el, points);
}

function updateElement(root, job) {
  root.dataset.state = job.state;
  if (root.matches("[data-job-metrics]")) updateMetrics(root, job.metrics);
  setField(root, "state", (el) => {
    el.textContent = STATE_LABELS[job.state] || job.state;
    el.className = `state state-${job.state}`;
  });
  setField(root, "progress", (el) => {
    const bar = el.querySelector("progress");
    if (bar) { bar.value = percent(job); bar.textContent = `${percent(job)} %`; }
    const text = el.querySelector(".progress-text");
    if (text) text.textContent = `${percent(job)} %`;
  });
  setField(root, "message", (el) => { el.textContent = job.message || ""; });
  setField(root, "error", (el) => { el.textContent = job.error || ""; el.hidden = !job.error; });
  setField(root, "result-link", (el) => {
    el.hidden = !job.result_url;
    if (job.result_url) el.querySelector("a").href = job.result_url;
  });
  setField(root, "duration", (el) => {
    el.textContent = job.duration == null ? "–" : `${job.duration.toFixed(1)} s`;
  });
  root.querySelectorAll('[data-action="cancel"]').forEach((f) => { f.hidden = FINAL.has(job.state); });
  root.querySelectorAll('[data-action="retry"]').forEach((f) => {
    f.hidden = !(job.state === "failed" || job.state === "cancelled");
  });
}

function actionForm(jobId, action, label) {
  const form = document.createElement("form");
  form.method = "post";
  form.action = `/jobs/${jobId}/${action}/`;
  form.dataset.action = action;
  const csrf = document.querySelector("[name=csrfmiddlewaretoken]");
  if (csrf) form.append(csrf.cloneNode());
  const button = document.createElement("button");
  button.type = "submit";
  button.className = "button small";
  button.textContent = label;
  const hidden = document.createElement("span");
  hidden.className = "visually-hidden";
  hidden.textContent = ` job ${jobId}`;
  button.append(hidden);
  form.append(button);
  return form;
}

function newRow(job) {
  // A job that started after the page loaded: add a row with the essentials.
  const row = document.createElement("tr");
  row.dataset.jobId = job.id;
  const link = document.createElement("a");
  link.href = `/jobs/${job.id}/`;
  link.textContent = `${job.label || job.kind} #${job.id}`;
  const cells = [document.createElement("td"), document.createElement("td"), document.createElement("td"),
    document.createElement("td"), document.createElement("td"), document.createElement("td")];
  cells[0].append(link);
  const msg = document.createElement("div"); msg.className = "muted small"; msg.dataset.field = "message";
  const err = document.createElement("div"); err.className = "error small"; err.dataset.field = "error"; err.setAttribute("role", "alert");
  cells[0].append(msg, err);
  const state = document.createElement("span"); state.dataset.field = "state"; cells[1].append(state);
  const prog = document.createElement("div"); prog.className = "progress-cell"; prog.dataset.field = "progress";
  const bar = document.createElement("progress"); bar.max = 100; bar.setAttribute("aria-label", `Progress of job ${job.id}`);
  const text = document.createElement("span"); text.className = "progress-text"; text.setAttribute("aria-hidden", "true");
  prog.append(bar, text); cells[2].append(prog);
  cells[3].dataset.field = "duration";
  cells[4].textContent = "you";
  cells[5].className = "actions";
  cells[5].append(actionForm(job.id, "cancel", "Cancel"), actionForm(job.id, "retry", "Retry"));
  row.append(...cells);
  return row;
}

function apply(job) {
  if ((lastSeq.get(job.id) ?? -1) >= job.sequence) return;
  lastSeq.set(job.id, job.sequence);
  let targets = document.querySelectorAll(`[data-job-id="${job.id}"]`);
  const table = document.querySelector("table[data-live-jobs] tbody");
  if (targets.length === 0 && table && document.body.querySelector("[data-start-kind]")) {
    table.prepend(newRow(job));
    document.querySelector("[data-empty]")?.remove();
    targets = document.querySelectorAll(`[data-job-id="${job.id}"]`);
  }
  targets.forEach((el) => updateElement(el, job));
  if (FINAL.has(job.state)) {
    const announcer = document.getElementById("job-announcer");
    if (announcer) announcer.textContent = `Job ${job.id} ${job.state}.`;
  }
}

function connect(delay = 500) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/jobs/`);
  socket.addEventListener("open", () => {
    delay = 500;
    const ids = new Set([...document.querySelectorAll("[data-job-id]")].map((el) => el.dataset.jobId));
    ids.forEach((id) => socket.send(JSON.stringify({action: "subscribe", job: Number(id)})));
    document.documentElement.dataset.jobsSocket = "open";
  });
  socket.addEventListener("message", (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "job") apply(data.job);
  });
  socket.addEventListener("close", (event) => {
    document.documentElement.dataset.jobsSocket = "closed";
    if (event.code === 4401) return; // signed out: nothing to reconnect to
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  });
}

// Start the jobs from the page without reloading it, then let the socket show progress.
document.querySelectorAll("form[action$='/jobs/start/']").forEach((form) => {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = form.querySelector("[name=kind]").value;
    const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
    const response = await fetch("/api/v1/jobs/", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({kind}),
    });
    const body = await response.json();
    if (!response.ok) { alert(body.detail || "Could not start the job."); return; }
    apply(body);
  });
});

document.querySelectorAll("[data-job-metrics]").forEach((el) => {
  const data = document.getElementById(el.dataset.jobMetrics);
  if (data) updateMetrics(el, JSON.parse(data.textContent));
});

connect();
