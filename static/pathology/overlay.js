// The AI diagnosis map over the slide viewer: the chosen inference's map tiles as a second layer
// of OpenSeadragon (on the slide's own levels and grid), shown or hidden, its opacity, the class
// legend, and the class probabilities of the patch under the pointer; starting a classification
// of this slide with one of the project's models.

import { call } from "./api.js";

const config = JSON.parse(document.getElementById("slide-config").textContent);
const $ = (id) => document.getElementById(id);
const viewerState = window.portalViewer;
const map = { inference: null, layer: null, results: null, cells: null, opacity: 0.6, tilesLoaded: 0 };
viewerState.map = map;

function say(text, kind = "") {
  $("ai-status").textContent = text;
  $("ai-status").className = kind ? `small notice ${kind}` : "small";
}

const percent = (p) => `${Math.round(p * 100)} %`;

// Deep Zoom level L (what OpenSeadragon counts in) is the pyramid's level L - offset: both end
// at full resolution, the pyramid stops at its single top tile.
function tileSource(inference) {
  const top = Math.ceil(Math.log2(Math.max(config.width, config.height, 1)));
  const offset = top - (config.levels - 1);
  return {
    width: config.width,
    height: config.height,
    tileSize: config.tileSize,
    tileOverlap: 0,
    minLevel: Math.max(0, offset),
    maxLevel: top,
    getTileUrl: (level, x, y) => `/api/v1/inferences/${inference.id}/tiles/${level - offset}/${x}/${y}`,
  };
}

function removeLayer() {
  if (map.layer) viewerState.viewer.world.removeItem(map.layer);
  map.layer = null;
}

function addLayer() {
  removeLayer();
  if (!map.inference || !$("ai-show").checked) return;
  viewerState.viewer.addTiledImage({
    tileSource: tileSource(map.inference),
    opacity: map.opacity,
    success: (event) => {
      map.layer = event.item;
      document.body.dataset.mapShown = String(map.inference.id);
    },
    error: (event) => say(`The map cannot be shown: ${event.message}`, "error"),
  });
}

function legend(inference, found) {
  $("ai-legend").replaceChildren(...found.classes.map((name) => {
    const item = document.createElement("li");
    const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
    swatch.style.background = found.colours[name];
    const count = inference.class_counts?.[name];
    item.append(swatch, `${name}${count !== undefined ? ` – ${count.toLocaleString()} patches` : ""}`);
    return item;
  }));
}

async function choose(inference) {
  map.inference = inference;
  map.results = null;
  map.cells = null;
  removeLayer();
  if (!inference) return;
  say("Loading the map…");
  let found;
  try {
    found = await call("GET", `/api/v1/inferences/${inference.id}/results/`);
  } catch (error) {
    return say(`The map cannot be loaded: ${error.message}`, "error");
  }
  if (map.inference !== inference) return; // another was chosen meanwhile
  map.results = found;
  // The grid's cells by column and row, for the patch under the pointer.
  map.cells = new Map();
  found.centres.forEach(([x, y], index) => {
    map.cells.set(`${Math.floor(x / found.side)},${Math.floor(y / found.side)}`, index);
  });
  legend(inference, found);
  const microns = Math.round(found.side * inference.mpp);
  say(`${inference.tissue_patches.toLocaleString()} tissue patches of ${microns} µm, classified on ${inference.device || "?"}.`);
  addLayer();
}

function showProbabilities(x, y) {
  const list = $("ai-probabilities");
  const found = map.results;
  if (!found || !map.cells) return;
  const index = map.cells.get(`${Math.floor(x / found.side)},${Math.floor(y / found.side)}`);
  if (index === undefined || !found.tissue[index]) {
    list.innerHTML = '<li class="muted">No tissue patch here.</li>';
    delete list.dataset.patch;
    return;
  }
  list.dataset.patch = index;
  const row = found.probabilities[index];
  const order = found.classes.map((name, i) => [name, row[i]]).sort((a, b) => b[1] - a[1]);
  list.replaceChildren(...order.map(([name, p]) => {
    const item = document.createElement("li");
    item.dataset.class = name;
    const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
    swatch.style.background = found.colours[name];
    const meter = Object.assign(document.createElement("meter"), { min: 0, max: 1, value: p });
    meter.setAttribute("aria-label", name);
    const value = Object.assign(document.createElement("span"), { className: "probability", textContent: percent(p) });
    item.append(swatch, Object.assign(document.createElement("span"), { textContent: name }), meter, value);
    return item;
  }));
}

function label(inference) {
  const when = inference.finished_at || inference.created_at;
  const date = when ? new Date(when).toLocaleDateString() : "";
  const states = { queued: "waiting", running: "running", failed: "failed" };
  return `${inference.model_label} – ${date}${states[inference.state] ? ` (${states[inference.state]})` : ""}`;
}

async function loadInferences(preferred = null) {
  let found;
  try {
    found = await call("GET", `/api/v1/inferences/?slide=${config.slide}&page_size=100`);
  } catch (error) {
    return say(`The maps cannot be listed: ${error.message}`, "error");
  }
  const inferences = found.results || found;
  const busy = inferences.filter((i) => i.state === "queued" || i.state === "running");
  const done = inferences.filter((i) => i.state === "done");
  $("ai-none").hidden = inferences.length > 0;
  $("ai-controls").hidden = done.length === 0;
  const select = $("ai-inference");
  select.replaceChildren(...done.map((i) => Object.assign(document.createElement("option"), { value: i.id, textContent: label(i) })));
  const failed = inferences.filter((i) => i.state === "failed" && i.id === preferred);
  if (failed.length) say(`The classification failed: ${failed[0].message}`, "error");
  if (busy.length) {
    say(`${busy.length} classification${busy.length === 1 ? "" : "s"} of this slide under way…`);
    setTimeout(() => loadInferences(preferred ?? busy[0].id), 2000);
  }
  const wanted = done.find((i) => i.id === preferred) || done.find((i) => i.id === config.inference) || done[0];
  if (wanted && wanted.id !== map.inference?.id) {
    select.value = String(wanted.id);
    await choose(wanted);
  }
  select.onchange = () => choose(done.find((i) => String(i.id) === select.value));
}

function setUp() {
  const viewer = viewerState.viewer;
  viewer.addHandler("tile-loaded", (event) => { if (event.tiledImage === map.layer) map.tilesLoaded += 1; });
  $("ai-show").addEventListener("change", () => (($("ai-show").checked) ? addLayer() : removeLayer()));
  $("ai-opacity").addEventListener("input", (event) => {
    map.opacity = Number(event.target.value) / 100;
    $("ai-opacity-value").textContent = `${event.target.value} %`;
    if (map.layer) map.layer.setOpacity(map.opacity);
  });
  new OpenSeadragon.MouseTracker({
    element: viewer.element,
    moveHandler: (event) => {
      const slide = viewer.world.getItemAt(0);
      if (!slide) return;
      const point = slide.viewerElementToImageCoordinates(event.position);
      showProbabilities(point.x, point.y);
    },
  });
  $("ai-apply-form")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model_version: Number($("ai-model").value), slides: [config.slide] };
    if ($("ai-mpp")) body.mpp = Number($("ai-mpp").value);
    const button = event.target.querySelector("button");
    button.disabled = true;
    try {
      const [made] = await call("POST", "/api/v1/inferences/", { json: body });
      say("Classifying the slide's tissue…");
      loadInferences(made.id);
    } catch (error) {
      say(`Not started: ${error.message}`, "error");
    } finally {
      button.disabled = false;
    }
  });
  loadInferences();
}

if (viewerState?.viewer) {
  if (viewerState.viewer.world.getItemCount()) setUp();
  else viewerState.viewer.addOnceHandler("open", setUp);
}
