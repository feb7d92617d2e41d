// The AI model pages: training and uploading (the list), applying a version to slides and writing
// its patient diagnoses to the metadata (a version's page). Everything goes through the API.

import { call } from "./api.js";

const $ = (id) => document.getElementById(id);
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function say(id, text, kind = "") {
  const element = $(id);
  if (!element) return;
  element.textContent = text;
  element.className = kind ? `notice ${kind}` : "";
}

async function submitting(form, statusId, work) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    say(statusId, error.message, "error");
  } finally {
    button.disabled = false;
  }
}

// --- training ------------------------------------------------------------------------------------------

const trainForm = $("train-form");
if (trainForm) {
  const base = $("train-base");
  const showBases = () => {
    if (!base) return;
    const project = $("train-project").value;
    for (const option of base.options) if (option.value) option.hidden = option.dataset.project !== project;
    if (base.selectedOptions[0]?.hidden) base.value = "";
    // Fine-tuning takes the base's network, patch size and input size.
    for (const id of ["train-architecture", "train-microns", "train-input"]) $(id).disabled = Boolean(base.value);
    $("train-freeze-field").hidden = !base.value;
  };
  $("train-project").addEventListener("change", showBases);
  base?.addEventListener("change", showBases);
  showBases();
  trainForm.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(trainForm, "train-status", async () => {
      const data = new FormData(trainForm);
      const body = { project: Number(data.get("project")), name: data.get("name"), label: data.get("label") };
      if (base?.value) {
        body.base_model = Number(base.value);
        body.freeze_backbone = $("train-freeze").checked;
      } else {
        body.architecture = data.get("architecture");
      }
      // Disabled fields (the base's sizes) are not in the form's data: the base's are used.
      for (const key of ["patch_microns", "input_size", "epochs", "batch_size", "learning_rate",
        "samples_per_epoch", "validation", "test", "seed"]) {
        if (data.get(key) !== "" && data.get(key) !== null) body[key] = Number(data.get(key));
      }
      body.stains = list(data.get("stains") || "");
      say("train-status", "Checking the slides and their labels…");
      const job = await call("POST", "/api/v1/models/train/", { json: body });
      say("train-status", `Training started as job #${job.id}.`);
      window.location.assign(`/jobs/${job.id}/`);
    });
  });
}

// --- uploading -----------------------------------------------------------------------------------------

const uploadForm = $("upload-form");
if (uploadForm) {
  const showKind = () => {
    const backbone = uploadForm.querySelector("input[name=kind]:checked").value === "backbone";
    $("upload-classes-field").hidden = backbone;
    $("upload-classes").required = !backbone;
    $("upload-features-field").hidden = !backbone;
    $("upload-features").required = backbone;
  };
  uploadForm.querySelectorAll("input[name=kind]").forEach((r) => r.addEventListener("change", showKind));
  showKind();
  uploadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(uploadForm, "upload-status", async () => {
      const data = new FormData(uploadForm);
      const body = new FormData();
      for (const key of ["project", "file", "name", "patch_microns", "input_size", "description"]) body.append(key, data.get(key));
      body.append("kind", data.get("kind"));
      if (data.get("kind") === "backbone") body.append("features", data.get("features"));
      else body.append("classes", JSON.stringify(list(data.get("classes"))));
      body.append("stains", JSON.stringify(list(data.get("stains") || "")));
      const numbers = (key) => list(data.get(key) || "").map(Number);
      body.append("normalisation", JSON.stringify({ mean: numbers("mean"), std: numbers("std") }));
      say("upload-status", "Uploading and trying the model…");
      const version = await call("POST", "/api/v1/models/", { body });
      say("upload-status", `Added as ${version.name} v${version.version}.`);
      window.location.assign(`/models/${version.id}/`);
    });
  });
}

// --- a version's page ----------------------------------------------------------------------------------

const configElement = $("model-config");
const config = configElement ? JSON.parse(configElement.textContent) : null;
const applyForm = $("apply-form");

async function followInferences() {
  // Until every classification of this version has ended; then the page (maps, votes) is redrawn.
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    let found;
    try {
      found = await call("GET", `/api/v1/inferences/?model_version=${config.version}&page_size=500`);
    } catch (error) {
      continue;
    }
    const rows = found.results || found;
    const busy = rows.filter((i) => i.state === "queued" || i.state === "running").length;
    if (!busy) return window.location.reload();
    say("apply-status", `${busy} slide${busy === 1 ? "" : "s"} still being classified…`);
  }
}

if (applyForm) {
  const boxes = () => [...applyForm.querySelectorAll("input[name=slides]")];
  $("apply-all").addEventListener("click", () => boxes().forEach((b) => { b.checked = true; }));
  $("apply-none").addEventListener("click", () => boxes().forEach((b) => { b.checked = false; }));
  applyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    submitting(applyForm, "apply-status", async () => {
      const slides = boxes().filter((b) => b.checked).map((b) => Number(b.value));
      if (!slides.length) return say("apply-status", "Select the slides to classify first.", "error");
      const body = { model_version: config.version, slides };
      if ($("apply-mpp").value) body.mpp = Number($("apply-mpp").value);
      const made = await call("POST", "/api/v1/inferences/", { json: body });
      say("apply-status", `${made.length} slide${made.length === 1 ? "" : "s"} queued for classification.`);
      followInferences();
    });
  });
}

if (config && document.querySelector('#inference-table tr[data-state="queued"], #inference-table tr[data-state="running"]')) {
  followInferences();
}

$("write-diagnoses")?.addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const done = await call("POST", `/api/v1/models/${config.version}/write-diagnoses/`, { json: {} });
    say("write-status", `AI diagnoses written to ${done.patients} patient${done.patients === 1 ? "" : "s"} (column “ai_diagnosis” in the project's sheet).`);
  } catch (error) {
    say("write-status", error.message, "error");
  } finally {
    button.disabled = false;
  }
});
