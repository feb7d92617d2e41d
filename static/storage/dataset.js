// A dataset's page: download and decrypt in the browser, share, re-key, confirm deleting.
//
// Downloading: the data key is unwrapped with a private key kept in this browser (GET wraps/),
// then each chunk's ciphertext (GET chunks/<i>/) is decrypted with AES-256-GCM (nonce from GET
// chunks/, associated data = dataset id and index), its SHA-256 checked against the chunk table,
// and written straight to disk: into the file the person picks where the browser can
// (showSaveFilePicker), else as an ordinary download streamed by a service worker
// (download-sw.js); only where neither works are the pieces collected into a Blob first.

import { call, dataKeyOf } from "./api.js";
import { datasetHash, decryptChunk, KeyError, sha256, toHex } from "./crypto.js";
import { formatBytes } from "./format.js";

const config = JSON.parse(document.getElementById("dataset-config").textContent);
const $ = (id) => document.getElementById(id);
const base = `datasets/${config.mnemonic}`;
const AHEAD = 3; // chunks fetched ahead while one is decrypted

function say(element, text, kind = "") {
  element.textContent = text;
  element.className = kind;
}

/** The file the person picks (showSaveFilePicker); null if they closed the dialog, undefined
 * where the browser has no picker or does not allow it here (e.g. a sandboxed frame). */
async function pickedFile(fileName) {
  if (typeof window.showSaveFilePicker !== "function") return undefined;
  try {
    const handle = await window.showSaveFilePicker({ suggestedName: fileName });
    const writable = await handle.createWritable();
    return { write: (bytes) => writable.write(bytes), close: () => writable.close(), abort: () => writable.abort(), kind: "disk" };
  } catch (error) {
    return error.name === "AbortError" ? null : undefined;
  }
}

/** A download the browser streams to disk through a service worker (download-sw.js); null where
 * service workers are not available (or it does not answer), so the caller falls back. */
async function streamedDownload(fileName, size) {
  if (!config.streamWorker || !("serviceWorker" in navigator)) return null;
  let registration;
  try {
    registration = await navigator.serviceWorker.register(config.streamWorker, { scope: config.streamScope });
    const worker = registration.active || registration.installing || registration.waiting;
    if (worker && worker.state !== "activated") {
      await new Promise((resolve) => {
        worker.addEventListener("statechange", () => worker.state === "activated" && resolve());
      });
    }
  } catch (error) {
    return null; // e.g. a private window
  }
  const id = crypto.randomUUID();
  const channel = new MessageChannel();
  const port = channel.port1;
  let credits = 0;
  let wake = null;
  let cancelled = false;
  let held;
  let answered;
  const registered = new Promise((resolve) => { held = resolve; });
  const opened = new Promise((resolve) => { answered = resolve; });
  port.onmessage = ({ data }) => {
    if (data.registered) held(true);
    if (data.opened) answered(true);
    if (data.pull) credits += 1;
    if (data.cancelled) cancelled = true;
    if (wake) wake();
  };
  const within = (promise) => Promise.race([promise, new Promise((resolve) => setTimeout(() => resolve(false), 30_000))]);
  registration.active.postMessage({ type: "portal-stream", id, fileName, size }, [channel.port2]);
  // The frame is opened only once the worker holds this download: a fetch event can reach the
  // worker before the message does, and would find nothing to answer.
  if (!(await within(registered))) return null;
  const frame = Object.assign(document.createElement("iframe"), { hidden: true });
  frame.src = `${config.streamScope}${id}/${encodeURIComponent(fileName)}`;
  document.body.append(frame);
  if (!(await within(opened))) {
    frame.remove();
    return null;
  }
  const finish = () => setTimeout(() => frame.remove(), 60_000);
  return {
    async write(bytes) {
      while (!credits && !cancelled) await new Promise((resolve) => { wake = resolve; });
      if (cancelled) throw new KeyError("The download was cancelled in the browser.");
      credits -= 1;
      const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
      port.postMessage({ chunk: own.buffer }, [own.buffer]);
    },
    async close() {
      port.postMessage({ done: true });
      finish();
    },
    async abort() {
      port.postMessage({ abort: "The download failed" });
      finish();
    },
    kind: "stream",
  };
}

/** The pieces collected in memory and saved as one download (browsers with neither way). */
function collectedDownload(fileName) {
  const parts = [];
  return {
    write: async (bytes) => parts.push(bytes),
    close: async () => {
      const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
      const link = Object.assign(document.createElement("a"), { href: url, download: fileName });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    },
    abort: async () => { parts.length = 0; },
    kind: "memory",
  };
}

async function fetchChunk(index) {
  const response = await call("GET", `${base}/chunks/${index}/`, { raw: true, headers: { Accept: "*/*" } });
  return new Uint8Array(await response.arrayBuffer());
}

async function download() {
  const button = $("download-button");
  const status = $("download-status");
  const bar = $("download-bar");
  button.disabled = true;
  say(status, "Preparing…");
  // Ask where to save first: the browser allows the dialog only right after the click.
  let sink = await pickedFile(config.fileName);
  if (sink === null) {
    say(status, "Download cancelled.");
    button.disabled = false;
    return;
  }
  try {
    say(status, "Opening the dataset's key with your key…");
    const key = await dataKeyOf(config.user, config.mnemonic);
    const table = await call("GET", `${base}/chunks/`);
    // No picker: a download streamed to disk, started once the key opened (else in memory).
    sink = sink || (await streamedDownload(config.fileName, config.size)) || collectedDownload(config.fileName);
    $("download-progress").hidden = false;
    const pending = new Map();
    const digests = [];
    let done = 0;
    for (let i = 0; i < table.length; i++) {
      for (let j = i; j < Math.min(table.length, i + AHEAD); j++) {
        if (!pending.has(j)) pending.set(j, fetchChunk(table[j].index));
      }
      const chunk = table[i];
      const ciphertext = await pending.get(i);
      pending.delete(i);
      const plain = await decryptChunk(key.cryptoKey, config.mnemonic, chunk.index, chunk.nonce, ciphertext);
      const digest = await sha256(plain);
      if (toHex(digest) !== chunk.sha256) throw new KeyError(`Chunk ${chunk.index} does not match its check sum: it was damaged.`);
      digests.push(digest);
      await sink.write(plain);
      done += plain.length;
      const percent = config.size ? Math.floor((done / config.size) * 100) : 100;
      bar.value = percent;
      $("download-percent").textContent = `${percent} %`;
      say(status, `Decrypting… ${formatBytes(done)} of ${formatBytes(config.size)}`);
    }
    if (config.sha256 && (await datasetHash(digests)) !== config.sha256) {
      throw new KeyError("The file's check sum does not match the dataset's: it is incomplete or damaged.");
    }
    await sink.close();
    bar.value = 100;
    $("download-percent").textContent = "100 %";
    say(status, sink.kind === "disk" ? `Saved ${config.fileName} (${formatBytes(done)}), decrypted and checked.`
      : `Downloaded ${config.fileName} (${formatBytes(done)}), decrypted and checked.`, "ok");
    document.body.dataset.downloaded = "yes";
    document.body.dataset.sink = sink.kind;
  } catch (error) {
    if (sink) await sink.abort().catch(() => {});
    say(status, `The download failed: ${error.message}`, "error");
    if (error.code === "key_not_in_browser") status.append(" ", link(config.keysUrl, "Go to the Keys page"));
  } finally {
    button.disabled = false;
  }
}

function link(href, text) {
  return Object.assign(document.createElement("a"), { href, textContent: text });
}

async function share(event) {
  event.preventDefault();
  const status = $("share-status");
  const user = $("share-user").value.trim();
  const level = $("share-level").value;
  if (!user) {
    say(status, "Type the user name of the person to share with.", "error");
    $("share-user").focus();
    return;
  }
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    say(status, "Opening the dataset's key with your key…");
    const key = await dataKeyOf(config.user, config.mnemonic);
    await call("POST", `${base}/grants/`, { json: { user, level, key: key.base64 } });
    say(status, `Shared with ${user}.`, "ok");
    window.location.reload();
  } catch (error) {
    say(status, `Not shared: ${error.message}`, "error");
    if (error.code === "key_not_in_browser") status.append(" ", link(config.keysUrl, "Go to the Keys page"));
  } finally {
    button.disabled = false;
  }
}

async function rekey() {
  const status = $("rekey-status");
  const button = $("rekey-button");
  if (!window.confirm("Re-key this dataset? It is encrypted again under a new key; this takes a while for large files.")) return;
  button.disabled = true;
  try {
    say(status, "Opening the dataset's key with your key…");
    const key = await dataKeyOf(config.user, config.mnemonic);
    const job = await call("POST", config.rekeyUrl, { json: { key: key.base64 } });
    $("rekey-progress").hidden = false;
    await followJob(job, (current) => {
      const percent = Math.floor((current.progress || 0) * 100);
      $("rekey-bar").value = percent;
      $("rekey-percent").textContent = `${percent} %`;
      say(status, current.message || "Re-keying…");
    }, status);
  } catch (error) {
    say(status, `Re-keying failed: ${error.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

// Progress is pushed over the jobs websocket (/ws/jobs/ hears the user's own jobs); should the
// socket fail, the job is asked for once a second instead.
function finished(current, status) {
  if (current.state === "succeeded") {
    say(status, "Re-keyed: the data is now encrypted under a new key.", "ok");
    document.body.dataset.rekeyed = "yes";
    setTimeout(() => window.location.reload(), 1500);
    return true;
  }
  if (current.state === "failed" || current.state === "cancelled") {
    say(status, `Re-keying ${current.state}: ${current.error || current.message || ""}`, "error");
    return true;
  }
  return false;
}

function followJob(job, update, status) {
  const id = job.id || (job.job && job.job.id);
  if (!id) {
    say(status, "Re-keying started.", "ok");
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    let done = false;
    let lastSeq = -1;
    const show = (current) => {
      if (done || current.id !== id || (current.sequence ?? 0) < lastSeq) return;
      lastSeq = current.sequence ?? lastSeq;
      update(current);
      if (finished(current, status)) { done = true; resolve(); }
    };
    const poll = async () => {
      while (!done) {
        try { show(await call("GET", `/api/v1/jobs/${id}/`)); } catch (error) { /* try again */ }
        await new Promise((wait) => setTimeout(wait, 1000));
      }
    };
    let socket;
    try {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${window.location.host}/ws/jobs/`);
    } catch (error) {
      poll();
      return;
    }
    socket.addEventListener("open", () => {
      // The server answers with the job's state as it is now, then each change.
      socket.send(JSON.stringify({ action: "subscribe", job: id }));
    });
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "job" && message.job.id === id) {
        document.body.dataset.rekeyLive = "yes";  // (the browser test checks progress was pushed)
        show(message.job);
      } else if (message.type === "error") {
        socket.close();  // not followed here: ask instead
      }
      if (done) socket.close();
    });
    socket.addEventListener("close", () => { if (!done) poll(); });
  });
}

$("download-button")?.addEventListener("click", download);
$("share-form")?.addEventListener("submit", share);
$("rekey-button")?.addEventListener("click", rekey);
$("delete-form")?.addEventListener("submit", (event) => {
  if (!window.confirm("Move this dataset to the recycle bin? It can be restored for a while.")) event.preventDefault();
});
document.body.dataset.ready = "yes";
