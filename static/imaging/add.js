// Adding DICOM: every chosen file goes in chunks (POST /api/v1/uploads/, purpose "dicom"); then
// one ingest run reads them all (POST /api/v1/imaging/ingests/) and its report is shown.

const $ = (id) => document.getElementById(id);
const CHUNK = 8 * 1024 * 1024;
const csrf = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";

async function call(method, path, { json, body, headers = {} } = {}) {
  const options = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (method !== "GET") options.headers["X-CSRFToken"] = csrf();
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (body !== undefined) options.body = body;
  const response = await fetch(path, options);
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const errors = data && data.errors ? Object.values(data.errors).flat().join(" ") : "";
    throw new Error(errors || (data && data.detail) || `The portal answered ${response.status}.`);
  }
  return data;
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function send(file, say) {
  const session = await call("POST", "/api/v1/uploads/", {
    json: { file_name: file.name, size: file.size, purpose: "dicom", chunk_size: CHUNK },
  });
  for (let index = 0; index < session.chunk_count; index++) {
    const bytes = new Uint8Array(await file.slice(index * CHUNK, (index + 1) * CHUNK).arrayBuffer());
    await call("PUT", `/api/v1/uploads/${session.id}/chunks/${index}/`, {
      body: bytes, headers: { "Content-Type": "application/octet-stream", "X-Content-SHA256": await sha256Hex(bytes) },
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
