// The page an upload link opens: no account, no key. Each dropped file is started through the
// link API, sent in chunks (each hashed here with crypto.subtle, the server checks the hash and
// encrypts the chunk for the link owner's keys), and finished. The upload's id is kept in
// localStorage under the file's name, size and date, so dropping the same file after a reload
// asks the server which chunks it has and sends only the others. A folder is packed into one TAR
// archive as it is sent (tar.js).

import { chosenFolder, droppedItems } from "./tar.js";

const root = document.querySelector("[data-link-upload]");
const token = root.dataset.token;
const api = root.dataset.api; // …/api/v1/upload-links/upload/
const chunkSize = Number(root.dataset.chunkSize);
const alertBox = root.querySelector("[data-link-alert]");
const list = root.querySelector("[data-file-list]");
const zone = root.querySelector("[data-drop-zone]");
const input = root.querySelector("[data-file-input]");
const folderInput = root.querySelector("[data-folder-input]");
const LINK_REFUSALS = new Set(["link_expired", "link_revoked", "link_unknown", "link_missing"]);
const RETRIES = 4;

let stopped = null; // the message once the link stopped working
let busy = 0;
const queue = [];

class LinkError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function showAlert(message) {
  alertBox.textContent = message;
  alertBox.hidden = false;
}

function stop(message) {
  stopped = message;
  showAlert(message);
  zone.classList.add("is-disabled");
  input.disabled = true;
}

/** Sizes as the page's own figures show them (Django's filesizeformat: 1 KB = 1024 bytes). */
function formatBytes(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

function messageOf(status, body) {
  if (body && body.errors && Object.keys(body.errors).length) {
    return Object.entries(body.errors)
      .map(([field, messages]) => (field === "non_field_errors" ? "" : `${field}: `) + [].concat(messages).join(" "))
      .join(" ");
  }
  if (body && body.detail) return body.detail;
  return `The portal answered with an error (${status}).`;
}

/** One call to the link API; throws LinkError with the server's message. */
async function call(method, path, { json, body, headers = {} } = {}) {
  const options = {
    method,
    headers: { Accept: "application/json", "X-Upload-Token": token, ...headers },
    credentials: "omit",
    cache: "no-store",
    referrerPolicy: "no-referrer",
  };
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (body !== undefined) {
    options.body = body;
  }
  let response;
  try {
    response = await fetch(api + path, options);
  } catch {
    throw new LinkError("The portal cannot be reached. Check your connection.", 0, "network");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new LinkError(messageOf(response.status, data), response.status, data && data.code);
    if (LINK_REFUSALS.has(error.code)) stop(error.message);
    throw error;
  }
  return data;
}

/** Network trouble and server errors are tried again with growing pauses; refusals are not. */
async function withRetries(what, ui) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await what();
    } catch (error) {
      const transient = error.status === 0 || error.status >= 500;
      if (!transient || attempt >= RETRIES || stopped) throw error;
      const pause = 1000 * 2 ** attempt;
      ui.status(`${error.message} Trying again in ${pause / 1000} s…`);
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

async function sha256(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function storageKey(file) {
  return `rdp-upload-link:${token.slice(0, 12)}:${file.name}:${file.size}:${file.lastModified}`;
}

function remembered(file) {
  try {
    return JSON.parse(localStorage.getItem(storageKey(file)) || "null");
  } catch {
    return null;
  }
}

function remember(file, value) {
  try {
    if (value) localStorage.setItem(storageKey(file), JSON.stringify(value));
    else localStorage.removeItem(storageKey(file));
  } catch {
    // Private windows may refuse storage: resuming after a reload then starts the file again.
  }
}

function fileRow(file) {
  const item = document.createElement("li");
  item.dataset.file = file.name;
  const name = document.createElement("span");
  name.className = "upload-name";
  name.textContent = `${file.name} (${formatBytes(file.size)})`;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `Progress of ${file.name}`);
  const status = document.createElement("span");
  status.className = "upload-status";
  status.dataset.status = "";
  status.textContent = "Waiting…";
  item.append(name, bar, status);
  list.append(item);
  return {
    item,
    progress(fraction) {
      bar.value = Math.round(fraction * 100);
    },
    status(text, kind = "") {
      status.textContent = text;
      status.className = `upload-status${kind ? ` is-${kind}` : ""}`;
      item.dataset.state = kind || "busy";
    },
  };
}

async function uploadFile(file, ui) {
  let saved = remembered(file);
  let have = new Map();
  if (saved) {
    try {
      const chunks = await withRetries(() => call("GET", `datasets/${encodeURIComponent(saved.upload)}/chunks/`), ui);
      have = new Map(chunks.map((c) => [c.index, c.sha256]));
      ui.status(`Going on where it stopped: ${have.size} part(s) already arrived.`);
    } catch (error) {
      if (error.status !== 404) throw error;
      remember(file, null); // finished or gone: send it again from the start
      saved = null;
    }
  }
  const size = saved ? saved.chunkSize : chunkSize;
  if (!saved) {
    ui.status("Starting…");
    const first = await sha256(await file.slice(0, size).arrayBuffer());
    const started = await withRetries(
      () =>
        call("POST", "datasets/", {
          json: { name: file.name, file_name: file.name, size: file.size, chunk_size: size, first_chunk_sha256: first },
        }),
      ui,
    );
    saved = { upload: started.upload, chunkSize: size };
    remember(file, saved);
  }
  const count = Math.max(1, Math.ceil(file.size / size));
  let sent = 0;
  for (let index = 0; index < count; index += 1) {
    if (stopped) throw new LinkError(stopped, 403, "stopped");
    const buffer = await file.slice(index * size, Math.min(file.size, (index + 1) * size)).arrayBuffer();
    const digest = await sha256(buffer);
    if (have.get(index) !== digest) {
      ui.status(`Sending part ${index + 1} of ${count}…`);
      await withRetries(
        () =>
          call("PUT", `datasets/${encodeURIComponent(saved.upload)}/chunks/${index}/`, {
            body: buffer,
            headers: { "Content-Type": "application/octet-stream", "X-Content-SHA256": digest },
          }),
        ui,
      );
    }
    sent += buffer.byteLength;
    ui.progress(file.size ? sent / file.size : 1);
  }
  ui.status("Finishing…");
  const finished = await withRetries(
    () => call("POST", `datasets/${encodeURIComponent(saved.upload)}/finish/`, { json: {} }),
    ui,
  );
  remember(file, null);
  ui.progress(1);
  ui.status(`Sent. SHA-256 of its parts: ${finished.sha256}`, "done");
  showRemaining();
}

/** What the link still takes, as the server counts it (other people may use the same link). */
async function showRemaining() {
  const target = root.querySelector("[data-remaining]");
  try {
    const info = await call("GET", "");
    const files = info.remaining_files === null ? "any number of files" : `${info.remaining_files} file(s)`;
    const bytes = info.remaining_bytes === null ? "" : `, ${formatBytes(info.remaining_bytes)} in all`;
    target.textContent = files + bytes;
  } catch {
    // The page's own figure stays; a refused link has shown its message already.
  }
}

async function work() {
  while (queue.length) {
    const { file, ui } = queue.shift();
    if (stopped) {
      ui.status(`Not sent: ${stopped}`, "error");
      continue;
    }
    busy += 1;
    try {
      await uploadFile(file, ui);
    } catch (error) {
      ui.status(`Not sent: ${error.message}`, "error");
    } finally {
      busy -= 1;
    }
  }
}

function add(files) {
  if (stopped) return;
  const idle = queue.length === 0 && busy === 0;
  for (const file of files) queue.push({ file, ui: fileRow(file) });
  if (idle) work();
}

if (!window.crypto || !window.crypto.subtle) {
  stop("This browser cannot check files here (it allows it only over https). Open the link with https://.");
} else {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("is-over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("is-over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("is-over");
    try {
      add(await droppedItems(event.dataTransfer));
    } catch (error) {
      showAlert(`The dropped folder could not be read: ${error.message}`);
    }
  });
  input.addEventListener("change", () => {
    add(Array.from(input.files));
    input.value = "";
  });
  folderInput.addEventListener("change", () => {
    if (folderInput.files.length) add(chosenFolder(folderInput.files));
    folderInput.value = "";
  });
  window.addEventListener("beforeunload", (event) => {
    if (busy || queue.length) event.preventDefault();
  });
  root.dataset.ready = "true";
}
