// The Keys page: create a key pair in the browser, keep the private key here, register the public
// key; download the private key (PEM), print it as a QR code (compact text), bring a saved key back
// (file, pasted text, photo or camera scan of the QR code).

import { call } from "./api.js";
import {
  compactText, describePrivateKey, generateKeyPair, importPrivateKey, KeyPasswordError, privatePem,
} from "./crypto.js";
import { forgetKey, listKeys, loadKey, saveKey } from "./keystore.js";
import { drawQr, readQrFromFile, scanCamera } from "./qr.js";

const config = JSON.parse(document.getElementById("keys-config").textContent);
const $ = (id) => document.getElementById(id);
const user = config.user;
const registered = new Set(config.registered);
const state = { ready: false, lastQr: null };
window.portalKeys = state;

function say(element, text, kind = "") {
  element.textContent = text;
  element.className = kind;
}

function button(label, onClick, extra = "") {
  const b = Object.assign(document.createElement("button"), { type: "button", className: `button small ${extra}`.trim() });
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function safeName(name) {
  return (name || "key").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "key";
}

async function downloadKey(fingerprint) {
  const kept = await loadKey(user, fingerprint);
  const text = await privatePem(kept.privateKey);
  const url = URL.createObjectURL(new Blob([text], { type: "application/x-pem-file" }));
  const link = Object.assign(document.createElement("a"), {
    href: url, download: `portal-key-${safeName(kept.name)}-${fingerprint.slice(0, 8)}.pem`,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function printKey(fingerprint) {
  const kept = await loadKey(user, fingerprint);
  const text = await compactText(kept.privateKey);
  const qr = drawQr(text, { cellSize: 8 });
  state.lastQr = { text, version: qr.version, modules: qr.modules };
  $("print-name").textContent = kept.name;
  $("print-fingerprint").textContent = fingerprint;
  $("print-text").textContent = text;
  $("print-qr").src = qr.canvas.toDataURL("image/png");
  await $("print-qr").decode().catch(() => {});
  if (!state.noPrintDialog) window.print();
}

function browserActions(fingerprint, name) {
  const span = document.createElement("span");
  span.append(
    button("Download key file", () => downloadKey(fingerprint)),
    button("Print QR code", () => printKey(fingerprint)),
    button("Remove from this browser", () => {
      if (!window.confirm(`Remove the private key “${name}” from this browser? Without a copy elsewhere you can no longer open your data.`)) return;
      forgetKey(user, fingerprint);
      window.location.reload();
    }, "danger"),
  );
  return span;
}

async function register(fingerprint, status) {
  const kept = await loadKey(user, fingerprint);
  const key = await call("POST", "keys/", { json: { name: kept.name, public_key: kept.publicPem } });
  say(status, key.state === "active" ? `Key “${key.name}” is registered and active.`
    : `Key “${key.name}” is registered. A portal administrator must activate it before you can use it.`, "ok");
}

function showKeptKeys() {
  const kept = listKeys(user);
  const keptPrints = new Set(kept.map((k) => k.fingerprint));
  for (const row of document.querySelectorAll("#key-table tbody tr")) {
    const fingerprint = row.dataset.fingerprint;
    const here = keptPrints.has(fingerprint);
    row.querySelector(".in-browser").textContent = here ? "Yes" : "No";
    if (here) row.querySelector(".browser-actions").append(browserActions(fingerprint, row.dataset.name));
  }
  const others = kept.filter((k) => !registered.has(k.fingerprint));
  const box = $("browser-only");
  box.replaceChildren();
  if (!others.length) return;
  const heading = Object.assign(document.createElement("h3"), { textContent: "Kept in this browser, not registered" });
  const list = document.createElement("ul");
  list.className = "plain";
  for (const k of others) {
    const item = document.createElement("li");
    const status = document.createElement("span");
    status.setAttribute("role", "status");
    item.dataset.fingerprint = k.fingerprint;
    item.append(`${k.name} (${k.fingerprint.slice(0, 16)}…) `, button("Register", async () => {
      try {
        await register(k.fingerprint, status);
        window.location.reload();
      } catch (error) {
        say(status, `Not registered: ${error.message}`, "error");
      }
    }, "primary"), browserActions(k.fingerprint, k.name), " ", status);
    list.append(item);
  }
  box.append(heading, list);
}

async function generate(event) {
  event.preventDefault();
  const status = $("generate-status");
  const name = $("generate-name").value.trim();
  if (!name) {
    say(status, "Give the key a name, e.g. where it is kept.", "error");
    $("generate-name").focus();
    return;
  }
  $("generate-button").disabled = true;
  try {
    say(status, "Creating the key… this takes a few seconds.");
    const pair = await generateKeyPair();
    const described = await describePrivateKey(pair.privateKey);
    saveKey(user, described, name);
    say(status, "Registering the public key…");
    await call("POST", "keys/", { json: { name, public_key: described.publicPem } });
    const url = new URL(window.location.href);
    url.searchParams.set("created", described.fingerprint);
    window.location.assign(url.toString());
  } catch (error) {
    say(status, `The key could not be created or registered: ${error.message}`, "error");
    showKeptKeys();
  } finally {
    $("generate-button").disabled = false;
  }
}

// A password-protected key file waiting for its password.
let locked = null;

async function bringKey(text, source, password = "") {
  const status = $("import-status");
  try {
    say(status, "Reading the key…");
    const described = await importPrivateKey(text, password);
    locked = null;
    $("import-password-field").hidden = true;
    $("import-password").value = "";
    const row = document.querySelector(`#key-table tr[data-fingerprint="${described.fingerprint}"]`);
    const name = row ? row.dataset.name : `key from ${source}`;
    saveKey(user, described, name);
    say(status, row ? `Your key “${name}” is now in this browser.`
      : "The key is now in this browser. It is not registered yet: use “Register” below the table.", "ok");
    document.body.dataset.imported = described.fingerprint;
    refreshRows();
    return true;
  } catch (error) {
    if (error instanceof KeyPasswordError) {
      locked = { text, source };
      $("import-password-field").hidden = false;
      $("import-password").value = "";
      $("import-password").focus();
      say(status, password ? error.message : `${error.message} Type it below and press “Open the key”.`, "error");
      return false;
    }
    say(status, `This key cannot be used: ${error.message}`, "error");
    return false;
  }
}

function openLocked() {
  if (locked) bringKey(locked.text, locked.source, $("import-password").value);
}

function refreshRows() {
  for (const span of document.querySelectorAll(".browser-actions")) span.replaceChildren();
  showKeptKeys();
}

async function importFile() {
  const file = $("import-file").files[0];
  if (!file) return;
  const status = $("import-status");
  if (file.type.startsWith("image/")) {
    say(status, "Looking for the QR code in the picture…");
    let text = null;
    try {
      text = await readQrFromFile(file);
    } catch (error) {
      text = null;
    }
    if (!text) {
      say(status, "No QR code found in this picture. Take a sharper photo, straight on, with the whole code in view.", "error");
      return;
    }
    await bringKey(text, "QR code");
  } else {
    await bringKey(await file.text(), "file");
  }
  $("import-file").value = "";
}

let scanner = null;

async function startScan() {
  const status = $("import-status");
  $("scan-view").hidden = false;
  $("scan-button").hidden = true;
  $("scan-stop").hidden = false;
  say(status, "Starting the camera…");
  try {
    scanner = await scanCamera($("scan-video"), async (text) => {
      if (!/^RDPK/i.test(text)) {
        say(status, "That QR code is not a portal key. Show the code of your printed key.", "error");
        return false;
      }
      return bringKey(text, "QR code");
    });
    say(status, "Hold the printed QR code in front of the camera…");
    await scanner.done;
  } catch (error) {
    const reason = error.name === "NotAllowedError" ? "the browser was not allowed to use the camera"
      : error.name === "NotFoundError" ? "no camera was found" : error.message;
    say(status, `The camera cannot be used: ${reason}. Choose a photo of the code or the key file instead.`, "error");
  } finally {
    stopScan();
  }
}

function stopScan() {
  if (scanner) scanner.stop();
  scanner = null;
  $("scan-view").hidden = true;
  $("scan-button").hidden = false;
  $("scan-stop").hidden = true;
}

function showBackup() {
  const created = new URL(window.location.href).searchParams.get("created");
  if (!created || !listKeys(user).some((k) => k.fingerprint === created)) return;
  $("backup").hidden = false;
  $("backup-download").addEventListener("click", () => downloadKey(created));
  $("backup-print").addEventListener("click", () => printKey(created));
  $("backup").scrollIntoView();
}

$("generate-form").addEventListener("submit", generate);
$("import-file").addEventListener("change", importFile);
$("import-button").addEventListener("click", () => bringKey($("import-text").value, "pasted text"));
$("import-password-button").addEventListener("click", openLocked);
$("import-password").addEventListener("keydown", (event) => {
  if (event.key === "Enter") openLocked();
});
$("scan-button").addEventListener("click", startScan);
$("scan-stop").addEventListener("click", stopScan);
for (const form of document.querySelectorAll(".revoke-form")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm("Revoke this key? Data shared with it can no longer be opened with it.")) event.preventDefault();
  });
}
showKeptKeys();
showBackup();
state.ready = true;
