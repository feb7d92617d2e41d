// Adding slides: each dropped file is sent with a progress bar, then its conversion is followed
// live until the slide is ready (with a link to the viewer) or failed (with the reason).

import { dataKeyOf } from "../storage/api.js";
import { sha256, toHex } from "../storage/crypto.js";
import { STATE_LABELS, call, slideWatcher } from "./api.js";

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

const CHUNK = 8 * 1024 * 1024;
const PARALLEL = 3;


async function chunkOf(file, session, index) {
  const start = index * session.chunk_size;
  return new Uint8Array(await file.slice(start, Math.min(file.size, start + session.chunk_size)).arrayBuffer());
}

// An unfinished upload of the same file (name and size) is resumed: only chunks the server lacks
// (or holds with other content) are sent.
async function sessionFor(file) {
  const page = await call("GET", "/api/v1/uploads/?state=receiving&purpose=slide");
  const found = (page.results || []).find((s) => s.file_name === file.name && s.size === file.size);
  if (found) {
    const detail = await call("GET", `/api/v1/uploads/${found.id}/`);
    return { session: detail, stored: new Map(detail.chunks.map((c) => [c.index, c.sha256])) };
  }
  const session = await call("POST", "/api/v1/uploads/", {
    json: { file_name: file.name, size: file.size, purpose: "slide", chunk_size: CHUNK },
  });
  return { session, stored: new Map() };
}

async function sendChunks(file, session, stored, ui) {
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < session.chunk_count) {
      const index = next++;
      const bytes = await chunkOf(file, session, index);
      const digest = toHex(await sha256(bytes));
      if (stored.get(index) !== digest) {
        for (let attempt = 0; ; attempt++) {
          try {
            await call("PUT", `/api/v1/uploads/${session.id}/chunks/${index}/`, {
              body: bytes, headers: { "Content-Type": "application/octet-stream", "X-Content-SHA256": digest },
            });
            break;
          } catch (error) {
            if (attempt >= 3 || (error.status && error.status < 500)) throw error;
            await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** attempt));
          }
        }
      }
      done += 1;
      ui.progress(done / session.chunk_count);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
}

async function send(file) {
  const ui = row(file);
  if (file.size === 0) return ui.status("Not sent: the file is empty.", "error");
  if (file.size > maxSize) return ui.status(`Not sent: slides are at most ${formatBytes(maxSize)}.`, "error");
  try {
    ui.status("Checking for an unfinished upload of this file…");
    const { session, stored } = await sessionFor(file);
    ui.status(stored.size ? `Continuing where it stopped (${stored.size} of ${session.chunk_count} pieces there)…` : "Sending…");
    await sendChunks(file, session, stored, ui);
    ui.status("Checking the whole file…");
    await call("POST", `/api/v1/uploads/${session.id}/finish/`);
    const slide = await call("POST", "/api/v1/slides/", {
      json: { project: Number($("slide-project").value), upload: session.id, name: file.name.replace(/\.[^.]+$/, "") },
    });
    rows.set(slide.id, ui);
    ui.item.dataset.slide = slide.id;
    ui.progress(0);
    ui.status("Sent; waiting to be converted…", "working");
    watcher.watch(slide.id);
    showSlide(ui, await call("GET", `/api/v1/slides/${slide.id}/`));
  } catch (error) {
    ui.status(`Not sent: ${error.message} Drop the same file again to continue.`, "error");
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
// --- from an encrypted dataset --------------------------------------------------------------------------

async function listDatasets() {
  const select = $("slide-dataset");
  if (!select) return;
  try {
    const page = await call("GET", "/api/v1/datasets/?state=available&page_size=200");
    const datasets = page.results || page;
    select.replaceChildren(...(datasets.length
      ? datasets.map((d) => Object.assign(document.createElement("option"), {
        value: d.mnemonic, textContent: `${d.name} – ${d.file_name} (${formatBytes(d.size)})`,
      }))
      : [Object.assign(document.createElement("option"), { value: "", textContent: "You can read no datasets." })]));
    select.disabled = !datasets.length;
  } catch (error) {
    select.replaceChildren(Object.assign(document.createElement("option"), { value: "", textContent: error.message }));
  }
}

$("dataset-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const mnemonic = $("slide-dataset").value;
  const status = $("dataset-status");
  if (!mnemonic) return;
  status.textContent = "Opening the dataset's key with your key…";
  try {
    const user = JSON.parse($("slide-user").textContent);
    const key = await dataKeyOf(user, mnemonic);
    const slide = await call("POST", "/api/v1/slides/", {
      json: { project: Number($("slide-project").value), dataset: mnemonic, key: key.base64 },
    });
    const ui = row({ name: $("slide-dataset").selectedOptions[0].textContent, size: slide.size });
    rows.set(slide.id, ui);
    ui.item.dataset.slide = slide.id;
    watcher.watch(slide.id);
    showSlide(ui, await call("GET", `/api/v1/slides/${slide.id}/`));
    status.textContent = "Added: the portal decrypts and converts it now.";
  } catch (error) {
    status.textContent = `Not added: ${error.message}`;
  }
});

listDatasets().finally(() => { document.body.dataset.ready = "yes"; });
