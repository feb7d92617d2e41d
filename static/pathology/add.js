// Adding slides: each dropped file is sent with a progress bar, then its conversion is followed
// live until the slide is ready (with a link to the viewer) or failed (with the reason).

import { STATE_LABELS, call, slideWatcher, upload } from "./api.js";

const $ = (id) => document.getElementById(id);
const maxSize = JSON.parse($("slide-max-size").textContent);
const rows = new Map();
const FINAL = new Set(["ready", "failed"]);

function formatBytes(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function row(file) {
  const item = document.createElement("li");
  item.className = "file";
  item.innerHTML = `<div class="file-head"><strong class="file-name"></strong> <span class="muted file-size"></span></div>
    <div class="transfer"><progress max="100" value="0"></progress> <span class="percent">0 %</span></div>
    <p class="file-status" role="status"></p>`;
  item.querySelector(".file-name").textContent = file.name;
  item.querySelector(".file-size").textContent = formatBytes(file.size);
  $("slide-uploads").append(item);
  return {
    item,
    progress(fraction) {
      item.querySelector("progress").value = Math.floor(fraction * 100);
      item.querySelector(".percent").textContent = `${Math.floor(fraction * 100)} %`;
    },
    status(text, state = "working") {
      const p = item.querySelector(".file-status");
      p.replaceChildren(...[].concat(text));
      item.dataset.state = state;
    },
  };
}

function showSlide(ui, slide) {
  if (slide.state === "ready") {
    ui.progress(1);
    const link = Object.assign(document.createElement("a"), { href: `/slides/${slide.id}/`, textContent: "Open in the viewer" });
    ui.status([`Ready: ${slide.message} `, link], "done");
  } else if (slide.state === "failed") {
    ui.status(`Not converted: ${slide.message}`, "error");
  } else {
    ui.status(`${STATE_LABELS[slide.state] || slide.state}: ${slide.message}`, "working");
  }
}

const watcher = slideWatcher(
  async (id, job) => {
    const ui = rows.get(id);
    if (!ui) return;
    ui.progress(job.progress || 0);
    ui.status(job.message || "Converting…", "working");
    if (["succeeded", "failed", "cancelled"].includes(job.state)) {
      const slide = await call("GET", `/api/v1/slides/${id}/`);
      showSlide(ui, slide);
      if (FINAL.has(slide.state)) watcher.forget(id);
    }
  },
  (slide) => {
    const ui = rows.get(slide.id);
    if (ui) showSlide(ui, slide);
    if (FINAL.has(slide.state)) watcher.forget(slide.id);
  },
);

async function send(file) {
  const ui = row(file);
  if (file.size === 0) return ui.status("Not sent: the file is empty.", "error");
  if (file.size > maxSize) return ui.status(`Not sent: slides are at most ${formatBytes(maxSize)}.`, "error");
  const form = new FormData();
  form.append("project", $("slide-project").value);
  form.append("file", file);
  form.append("name", file.name.replace(/\.[^.]+$/, ""));
  ui.status("Sending…");
  try {
    const slide = await upload("/api/v1/slides/", form, (fraction) => ui.progress(fraction));
    rows.set(slide.id, ui);
    ui.item.dataset.slide = slide.id;
    ui.progress(0);
    ui.status("Sent; waiting to be converted…", "working");
    watcher.watch(slide.id);
    showSlide(ui, await call("GET", `/api/v1/slides/${slide.id}/`));
  } catch (error) {
    ui.status(`Not sent: ${error.message}`, "error");
  }
}

async function sendAll(files) {
  for (const file of files) await send(file);
}

const zone = $("slide-drop");
if (zone) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    sendAll([...event.dataTransfer.files]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("slide-files").click(); }
  });
  $("slide-files").addEventListener("change", (event) => {
    sendAll([...event.target.files]);
    event.target.value = "";
  });
}
document.body.dataset.ready = "yes";
