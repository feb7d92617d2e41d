// The upload page: every dropped file becomes a dataset, sent in chunks through the API.
//
// For each file: hash the first chunk; if datasets you can read start the same way
// (GET datasets/duplicates/), hash the whole file and compare the dataset hashes – the same file
// is not uploaded again unless you say so. Then POST datasets/ starts the upload, each chunk goes
// with its SHA-256 (PUT chunks/<i>/), and finish/ completes it. An unfinished upload of yours with
// the same file name and size is resumed: the file is hashed again and only chunks the server
// lacks (GET chunks/) are sent. When the server's kept key expired, the browser unwraps the key
// with yours and supplies it (POST key/). A dropped or chosen folder is packed into one TAR
// archive on the way (tar.js), read from the folder's files as it is sent.

import { ApiError, call, dataKeyOf } from "./api.js";
import { datasetHash, sha256, toHex } from "./crypto.js";
import { formatBytes } from "./format.js";
import { chosenFolder, droppedItems } from "./tar.js";

const config = JSON.parse(document.getElementById("upload-config").textContent);
const $ = (id) => document.getElementById(id);
const PARALLEL_FILES = 2;
const RETRIES = 3;

const state = { unfinished: [], queue: [], active: 0, busy: 0, ready: false };
window.portalUpload = state;

function datasetUrl(mnemonic) {
  return config.datasetUrl.replace("MNEMONIC", mnemonic);
}

function link(href, text) {
  return Object.assign(document.createElement("a"), { href, textContent: text });
}

// --- the list of files -------------------------------------------------------------------------------

function addItem(file) {
  $("files-section").hidden = false;
  const item = document.createElement("li");
  item.className = "file";
  item.dataset.file = file.name;
  item.innerHTML = `<div class="file-head"><strong class="file-name"></strong> <span class="muted file-size"></span></div>
    <div class="transfer"><progress max="100" value="0"></progress> <span class="percent">0 %</span></div>
    <p class="file-status" role="status" aria-live="polite"></p><div class="file-actions"></div>`;
  item.querySelector(".file-name").textContent = file.name;
  item.querySelector(".file-size").textContent = formatBytes(file.size);
  $("files").append(item);
  return {
    element: item,
    stopped: false,
    status(text, kind = "") {
      const p = item.querySelector(".file-status");
      p.replaceChildren(text);
      p.className = `file-status ${kind}`;
      item.dataset.state = kind || "working";
    },
    progress(fraction) {
      const percent = Math.floor(fraction * 100);
      item.querySelector("progress").value = percent;
      item.querySelector(".percent").textContent = `${percent} %`;
    },
    actions(...buttons) {
      item.querySelector(".file-actions").replaceChildren(...buttons);
    },
  };
}

function makeButton(label, kind = "") {
  const b = Object.assign(document.createElement("button"), { type: "button", className: `button small ${kind}`.trim() });
  b.textContent = label;
  return b;
}

// --- hashing -------------------------------------------------------------------------------------------

async function readChunk(file, chunkSize, index) {
  return new Uint8Array(await file.slice(index * chunkSize, Math.min(file.size, (index + 1) * chunkSize)).arrayBuffer());
}

function chunkCount(size, chunkSize) {
  return Math.max(1, Math.ceil(size / chunkSize));
}

async function hashFile(file, chunkSize, item) {
  const digests = [];
  const count = chunkCount(file.size, chunkSize);
  for (let i = 0; i < count; i++) {
    if (item.stopped) throw new Stopped();
    digests.push(await sha256(await readChunk(file, chunkSize, i)));
    item.progress((i + 1) / count);
  }
  return datasetHash(digests);
}

class Stopped extends Error {}

// --- sending -------------------------------------------------------------------------------------------

async function withRetries(work) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      // Connection problems and server hiccups are tried again; refusals are not.
      const retry = error instanceof ApiError && (error.status === 0 || error.status >= 502);
      if (!retry || attempt >= RETRIES) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** attempt));
    }
  }
}

async function supplyKey(mnemonic) {
  const key = await dataKeyOf(config.user, mnemonic);
  await call("POST", `datasets/${mnemonic}/key/`, { json: { key: key.base64 } });
}

async function sendChunk(mnemonic, index, bytes, digest) {
  const put = () => call("PUT", `datasets/${mnemonic}/chunks/${index}/`, {
    body: bytes, headers: { "Content-Type": "application/octet-stream", "X-Content-SHA256": digest },
  });
  try {
    return await withRetries(put);
  } catch (error) {
    if (error.code !== "key_needed") throw error;
    await supplyKey(mnemonic);
    return withRetries(put);
  }
}

async function finish(mnemonic) {
  try {
    return await withRetries(() => call("POST", `datasets/${mnemonic}/finish/`, { json: {} }));
  } catch (error) {
    if (error.code !== "key_needed") throw error;
    await supplyKey(mnemonic);
    return withRetries(() => call("POST", `datasets/${mnemonic}/finish/`, { json: {} }));
  }
}

async function sendFile(file, dataset, item, stored = new Map()) {
  const count = dataset.chunk_count;
  let sent = 0;
  const stop = makeButton("Pause");
  stop.addEventListener("click", () => { item.stopped = true; });
  item.actions(stop);
  for (let i = 0; i < count; i++) {
    if (item.stopped) throw new Stopped();
    const bytes = await readChunk(file, dataset.chunk_size, i);
    const digest = toHex(await sha256(bytes));
    const have = stored.get(i);
    if (have && have !== digest) {
      throw new Error(`This file differs from the one you began uploading (at piece ${i + 1}). ` +
        "Discard the unfinished upload and drop the file again to start anew.");
    }
    if (!have) {
      await sendChunk(dataset.mnemonic, i, bytes, digest);
      sent += 1;
    }
    item.progress((i + 1) / count);
    item.status(`Sending… ${formatBytes(Math.min(file.size, (i + 1) * dataset.chunk_size))} of ${formatBytes(file.size)}`);
  }
  item.status("Finishing…");
  const done = await finish(dataset.mnemonic);
  return { done, sent };
}

// --- one file ------------------------------------------------------------------------------------------

function askDuplicate(item, same) {
  return new Promise((resolve) => {
    const names = same.map((d) => link(datasetUrl(d.mnemonic), `${d.name} (${d.mnemonic})`));
    const text = document.createElement("span");
    text.append("You already have this file: ");
    names.forEach((a, i) => text.append(...(i ? [", ", a] : [a])));
    text.append(". Upload it again?");
    item.status(text, "duplicate");
    const skip = makeButton("Don't upload", "primary");
    const anyway = makeButton("Upload anyway");
    skip.addEventListener("click", () => resolve(false));
    anyway.addEventListener("click", () => resolve(true));
    item.actions(skip, anyway);
    skip.focus();
  });
}

async function handleFile(file, options) {
  const item = addItem(file);
  try {
    const match = state.unfinished.find((d) => d.file_name === file.name && d.size === file.size);
    const chunkSize = match ? match.chunk_size : config.chunkSize;
    if (file.size > config.maxSize) throw new Error(`Files are at most ${formatBytes(config.maxSize)}.`);
    item.status("Checking the file…");
    const first = toHex(await sha256(await readChunk(file, chunkSize, 0)));
    if (match && (!match.first_chunk_sha256 || match.first_chunk_sha256 === first)) {
      item.status("Continuing your unfinished upload: checking which pieces are there…");
      const table = await call("GET", `datasets/${match.mnemonic}/chunks/`);
      const stored = new Map(table.map((c) => [c.index, c.sha256]));
      const { done, sent } = await sendFile(file, match, item, stored);
      state.unfinished = state.unfinished.filter((d) => d.mnemonic !== match.mnemonic);
      document.querySelector(`#unfinished li[data-dataset="${match.mnemonic}"]`)?.remove();
      if (!state.unfinished.length) $("unfinished-section").hidden = true;
      return succeeded(item, done, `Upload completed (${sent} missing piece${sent === 1 ? "" : "s"} sent).`);
    }
    const duplicates = await call("GET", `datasets/duplicates/?first_chunk_sha256=${first}`);
    if (duplicates.length) {
      item.status("A dataset you can read starts the same way: comparing the whole file…");
      const hash = await hashFile(file, chunkSize, item);
      const same = duplicates.filter((d) => d.sha256 === hash);
      if (same.length && !(await askDuplicate(item, same))) {
        item.progress(0);
        item.actions();
        item.status("Not uploaded: you already have this file.", "skipped");
        return;
      }
      item.progress(0);
    }
    const dataset = await call("POST", "datasets/", {
      json: {
        file_name: file.name, name: file.name, size: file.size, chunk_size: chunkSize,
        first_chunk_sha256: first, description: options.description,
        project: options.project ? Number(options.project) : null,
      },
    });
    const { done } = await sendFile(file, dataset, item);
    succeeded(item, done, "Uploaded and encrypted.");
  } catch (error) {
    item.actions();
    if (error instanceof Stopped) {
      item.status("Paused. Drop the same file again to continue.", "paused");
      await loadUnfinished();
    } else {
      item.status(`Not uploaded: ${error.message}`, "error");
    }
  }
}

function succeeded(item, dataset, text) {
  item.progress(1);
  item.actions();
  const span = document.createElement("span");
  span.append(`${text} `, link(datasetUrl(dataset.mnemonic), `Open ${dataset.name}`));
  item.status(span, "done");
  item.element.dataset.dataset = dataset.mnemonic;
}

// --- queue -----------------------------------------------------------------------------------------------

function enqueue(files) {
  const options = { project: $("upload-project").value, description: $("upload-description").value.trim() };
  for (const file of files) state.queue.push([file, options]);
  pump();
}

function pump() {
  while (state.active < PARALLEL_FILES && state.queue.length) {
    const [file, options] = state.queue.shift();
    state.active += 1;
    handleFile(file, options).finally(() => {
      state.active -= 1;
      pump();
    });
  }
}

// --- unfinished uploads --------------------------------------------------------------------------------

async function loadUnfinished() {
  const page = await call("GET", "datasets/?state=uploading&mine=1&page_size=100");
  const list = page.results || page;
  const active = new Set([...document.querySelectorAll("#files li[data-dataset]")].map((li) => li.dataset.dataset));
  state.unfinished = list.filter((d) => !active.has(d.mnemonic));
  const box = $("unfinished");
  box.replaceChildren();
  for (const dataset of state.unfinished) {
    const item = document.createElement("li");
    item.dataset.dataset = dataset.mnemonic;
    const table = await call("GET", `datasets/${dataset.mnemonic}/chunks/`).catch(() => []);
    item.append(link(datasetUrl(dataset.mnemonic), dataset.file_name),
      ` – ${formatBytes(dataset.size)}, ${table.length} of ${dataset.chunk_count} pieces sent, started ` +
      `${new Date(dataset.created_at).toLocaleString()}. `);
    const discard = makeButton("Discard", "danger");
    discard.addEventListener("click", async () => {
      if (!window.confirm(`Discard the unfinished upload of ${dataset.file_name}? It goes to the recycle bin.`)) return;
      try {
        await call("DELETE", `datasets/${dataset.mnemonic}/`);
        await loadUnfinished();
      } catch (error) {
        window.alert(error.message);
      }
    });
    item.append(discard);
    box.append(item);
  }
  $("unfinished-section").hidden = state.unfinished.length === 0;
}

// --- drag and drop -----------------------------------------------------------------------------------------

const zone = $("dropzone");
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", async (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  try {
    const files = await droppedItems(event.dataTransfer);
    if (files.length) enqueue(files);
  } catch (error) {
    window.alert(`The dropped folder could not be read: ${error.message}`);
  }
});
zone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("upload-files").click();
  }
});
$("upload-files").addEventListener("change", (event) => {
  enqueue([...event.target.files]);
  event.target.value = "";
});
$("upload-folder").addEventListener("change", (event) => {
  if (event.target.files.length) enqueue(chosenFolder(event.target.files));
  event.target.value = "";
});
window.addEventListener("beforeunload", (event) => {
  if (state.active) event.preventDefault();
});

loadUnfinished().catch((error) => {
  $("unfinished-section").hidden = false;
  $("unfinished").textContent = `Your unfinished uploads could not be listed: ${error.message}`;
}).finally(() => { state.ready = true; });
