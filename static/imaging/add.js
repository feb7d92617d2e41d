// Adding DICOM: every chosen file goes in chunks (POST /api/v1/uploads/, purpose "dicom"); then
// one ingest run reads them all (POST /api/v1/imaging/ingests/) and its report is shown.

import { call } from "../storage/api.js";
import { sha256, toHex } from "../storage/crypto.js";

const $ = (id) => document.getElementById(id);
const CHUNK = 8 * 1024 * 1024;

async function send(file, say) {
  const session = await call("POST", "/api/v1/uploads/", {
    json: { file_name: file.name, size: file.size, purpose: "dicom", chunk_size: CHUNK },
  });
  for (let index = 0; index < session.chunk_count; index++) {
    const bytes = new Uint8Array(await file.slice(index * CHUNK, (index + 1) * CHUNK).arrayBuffer());
    await call("PUT", `/api/v1/uploads/${session.id}/chunks/${index}/`, {
      body: bytes, headers: { "Content-Type": "application/octet-stream", "X-Content-SHA256": toHex(await sha256(bytes)) },
    });
    say(`Sending ${file.name}: ${Math.floor(((index + 1) / session.chunk_count) * 100)} %`);
  }
  await call("POST", `/api/v1/uploads/${session.id}/finish/`);
  return session.id;
}

function showReport(run) {
  const box = $("dicom-report");
  const list = document.createElement("ul");
  for (const entry of run.report) {
    const item = document.createElement("li");
    item.dataset.outcome = entry.outcome;
    item.textContent = `${entry.file}: ${entry.outcome}${entry.reason ? ` – ${entry.reason}` : ""}`;
    list.append(item);
  }
  const link = Object.assign(document.createElement("a"), { href: "/studies/", textContent: "See the studies" });
  box.replaceChildren(Object.assign(document.createElement("p"), { textContent: run.message }), list, link);
}

$("dicom-upload")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = [...$("dicom-files").files];
  const say = (text) => { $("dicom-status").textContent = text; };
  if (!files.length) return say("Choose files first.");
  try {
    const uploads = [];
    for (const file of files) {
      if (file.size === 0) { say(`${file.name} is empty: left out.`); continue; }
      uploads.push(await send(file, say));
    }
    const run = await call("POST", "/api/v1/imaging/ingests/", {
      json: { project: Number($("dicom-project").value), uploads },
    });
    say("Sent; the files are being read…");
    for (;;) {
      const current = await call("GET", `/api/v1/imaging/ingests/${run.id}/`);
      if (current.state === "done" || current.state === "failed") {
        say(current.state === "done" ? "Done." : `Failed: ${current.message}`);
        document.body.dataset.ingested = current.state;
        return showReport(current);
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } catch (error) {
    say(`Not done: ${error.message}`);
  }
});
document.body.dataset.ready = "yes";
