// The slide page: OpenSeadragon on the slide's Deep Zoom tiles with a navigator, scale bar (from
// microns per pixel), magnification on screen, rotation, full screen and keyboard; annotations
// (points, rectangles, polygons with labels) drawn over it, stored through the API and imported or
// exported as GeoJSON; the linked sample; converting again; live conversion progress.

import { STATE_LABELS, call, slideWatcher } from "./api.js";

const config = JSON.parse(document.getElementById("slide-config").textContent);
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const state = { viewer: null, loadedLevels: new Set(), annotations: [], tool: "pan", draft: null, ready: false };
window.portalViewer = state;

// --- conversion progress -----------------------------------------------------------------------------

function say(id, text, kind = "") {
  const element = $(id);
  if (!element) return;
  element.textContent = text;
  element.className = kind ? `notice ${kind}` : "muted";
}

const FINAL = new Set(["ready", "failed"]);
const watcher = slideWatcher(
  async (id, job) => {
    $("slide-progress").hidden = false;
    $("slide-progress").value = Math.floor((job.progress || 0) * 100);
    say("slide-message", job.message || "");
    if (["succeeded", "failed", "cancelled"].includes(job.state)) await refreshState(await call("GET", config.api));
  },
  (slide) => refreshState(slide),
);

async function refreshState(slide) {
  $("slide-state").textContent = STATE_LABELS[slide.state] || slide.state;
  $("slide-state").className = `badge state-${slide.state}`;
  say("slide-message", slide.message, slide.state === "failed" ? "error" : "");
  if (!FINAL.has(slide.state)) return;
  watcher.forget(config.slide);
  $("slide-progress").hidden = true;
  // A new pyramid (first conversion, or other settings): show it.
  if (slide.state === "ready") window.location.reload();
}

if (!FINAL.has(config.state)) watcher.watch(config.slide);

// --- scale bar and magnification ----------------------------------------------------------------------

function niceLength(microns) {
  const power = 10 ** Math.floor(Math.log10(microns));
  for (const step of [1, 2, 5, 10]) if (step * power >= microns) return step * power;
  return 10 * power;
}

function formatLength(microns) {
  if (microns >= 1000) return `${microns / 1000} mm`;
  if (microns >= 1) return `${microns} µm`;
  return `${microns * 1000} nm`;
}

function updateReadouts(scaleBar) {
  const viewport = state.viewer.viewport;
  const screenPerImagePixel = viewport.viewportToImageZoom(viewport.getZoom(true));
  if (config.mpp) {
    const micronsPerScreenPixel = config.mpp / screenPerImagePixel;
    const length = niceLength(micronsPerScreenPixel * 120);
    scaleBar.style.width = `${Math.round(length / micronsPerScreenPixel)}px`;
    scaleBar.querySelector("span").textContent = formatLength(length);
  }
  // The objective's magnification at full resolution; without it, 10× ≈ 1 µm per pixel.
  const objective = config.objective || (config.mpp ? 10 / config.mpp : null);
  const text = objective ? `${(objective * screenPerImagePixel).toFixed(objective * screenPerImagePixel < 10 ? 1 : 0)}×` : "–";
  $("viewer-magnification").textContent = config.objective || !config.mpp ? text : `≈ ${text}`;
}

// --- annotations ----------------------------------------------------------------------------------------

let overlay;

function toScreen([x, y]) {
  const point = state.viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  return [point.x, point.y];
}

function toImage(position) {
  const point = state.viewer.viewport.viewerElementToImageCoordinates(position);
  return [Math.round(point.x * 10) / 10, Math.round(point.y * 10) / 10];
}

function shape(geometry, kind, label, { draft = false, id = null } = {}) {
  let element;
  if (geometry.type === "Point") {
    const [x, y] = toScreen(geometry.coordinates);
    element = document.createElementNS(SVG, "circle");
    element.setAttribute("cx", x);
    element.setAttribute("cy", y);
    element.setAttribute("r", 6);
  } else {
    element = document.createElementNS(SVG, draft && kind === "polygon" ? "polyline" : "polygon");
    element.setAttribute("points", geometry.coordinates[0].map((p) => toScreen(p).join(",")).join(" "));
  }
  element.setAttribute("class", `annotation ${kind}${draft ? " draft" : ""}`);
  if (id !== null) element.dataset.annotation = id;
  const title = document.createElementNS(SVG, "title");
  title.textContent = label || kind;
  element.append(title);
  return element;
}

function redraw() {
  if (!overlay) return;
  const parts = state.annotations.map((f) =>
    shape(f.geometry, f.properties.kind, f.properties.label, { id: f.id }));
  if (state.draft) parts.push(shape(draftGeometry(), state.draft.kind, "", { draft: true }));
  overlay.replaceChildren(...parts);
}

function draftGeometry() {
  const { kind, points, to } = state.draft;
  if (kind === "rectangle") {
    const [[x0, y0], [x1, y1]] = [points[0], to || points[0]];
    return { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] };
  }
  return { type: "Polygon", coordinates: [[...points, ...(to ? [to] : [])]] };
}

function listAnnotations() {
  const list = $("annotation-list");
  if (!state.annotations.length) {
    list.innerHTML = '<li class="muted">None yet.</li>';
    return;
  }
  list.replaceChildren(...state.annotations.map((feature) => {
    const item = document.createElement("li");
    item.dataset.annotation = feature.id;
    const go = Object.assign(document.createElement("button"), { type: "button", className: "link-button" });
    go.textContent = `${feature.properties.label || "(no label)"} – ${feature.properties.kind}`;
    go.addEventListener("click", () => focusOn(feature.geometry));
    item.append(go);
    if (config.canWrite) {
      const remove = Object.assign(document.createElement("button"), { type: "button", className: "button small danger" });
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${feature.properties.label || feature.properties.kind}`);
      remove.addEventListener("click", () => removeAnnotation(feature.id));
      item.append(" ", remove);
    }
    return item;
  }));
  const labels = [...new Set(state.annotations.map((f) => f.properties.label).filter(Boolean))];
  const datalist = $("annotation-labels");
  if (datalist) datalist.replaceChildren(...labels.map((l) => Object.assign(document.createElement("option"), { value: l })));
}

function focusOn(geometry) {
  const points = geometry.type === "Point" ? [geometry.coordinates] : geometry.coordinates[0];
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const margin = Math.max(200, (Math.max(...xs) - Math.min(...xs)) * 0.3);
  const rect = state.viewer.viewport.imageToViewportRectangle(
    Math.min(...xs) - margin, Math.min(...ys) - margin,
    Math.max(...xs) - Math.min(...xs) + 2 * margin, Math.max(...ys) - Math.min(...ys) + 2 * margin);
  state.viewer.viewport.fitBounds(rect);
}

async function loadAnnotations() {
  const collection = await call("GET", `${config.api}annotations/`);
  state.annotations = collection.features;
  listAnnotations();
  redraw();
}

async function saveAnnotation(kind, geometry) {
  const label = ($("annotation-label")?.value || "").trim();
  try {
    await call("POST", `${config.api}annotations/`, {
      json: { type: "Feature", geometry, properties: { label, kind } },
    });
    say("annotation-status", `${kind[0].toUpperCase()}${kind.slice(1)} saved.`);
  } catch (error) {
    say("annotation-status", `Not saved: ${error.message}`, "error");
  }
  await loadAnnotations();
}

async function removeAnnotation(id) {
  try {
    await call("DELETE", `${config.api}annotations/${id}/`);
  } catch (error) {
    say("annotation-status", `Not removed: ${error.message}`, "error");
  }
  await loadAnnotations();
}

function setTool(tool) {
  state.tool = tool;
  state.draft = null;
  document.querySelectorAll("[data-tool]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.tool === tool)));
  state.viewer.element.classList.toggle("drawing", tool !== "pan");
  redraw();
}

function finishPolygon() {
  const { points } = state.draft;
  state.draft = null;
  if (points.length >= 3) saveAnnotation("polygon", { type: "Polygon", coordinates: [[...points, points[0]]] });
  else redraw();
}

function setUpDrawing() {
  const viewer = state.viewer;
  // While drawing, the viewer's own reaction to the mouse (panning, zooming) is held back.
  const holdBack = (event) => { if (state.tool !== "pan") event.preventDefaultAction = true; };
  viewer.addHandler("canvas-press", (event) => {
    holdBack(event);
    if (state.tool === "rectangle") state.draft = { kind: "rectangle", points: [toImage(event.position)] };
  });
  viewer.addHandler("canvas-drag", (event) => {
    holdBack(event);
    if (state.tool === "rectangle" && state.draft) {
      state.draft.to = toImage(event.position);
      redraw();
    }
  });
  viewer.addHandler("canvas-release", (event) => {
    if (state.tool !== "rectangle" || !state.draft) return;
    const [start, end] = [state.draft.points[0], toImage(event.position)];
    state.draft = null;
    if (Math.abs(end[0] - start[0]) < 1 || Math.abs(end[1] - start[1]) < 1) return redraw();
    const [x0, x1] = [Math.min(start[0], end[0]), Math.max(start[0], end[0])];
    const [y0, y1] = [Math.min(start[1], end[1]), Math.max(start[1], end[1])];
    saveAnnotation("rectangle", { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] });
  });
  viewer.addHandler("canvas-click", (event) => {
    holdBack(event);
    if (state.tool === "point" && event.quick) {
      saveAnnotation("point", { type: "Point", coordinates: toImage(event.position) });
    } else if (state.tool === "polygon" && event.quick) {
      if (!state.draft) state.draft = { kind: "polygon", points: [] };
      state.draft.points.push(toImage(event.position));
      redraw();
    }
  });
  viewer.addHandler("canvas-double-click", (event) => {
    holdBack(event);
    if (state.tool === "polygon" && state.draft) {
      finishPolygon();
    }
  });
  viewer.element.addEventListener("keydown", (event) => {
    if (state.tool !== "polygon" || !state.draft) return;
    if (event.key === "Enter") finishPolygon();
    if (event.key === "Escape") { state.draft = null; redraw(); }
  });
  new OpenSeadragon.MouseTracker({
    element: viewer.element,
    moveHandler: (event) => {
      const [x, y] = toImage(event.position);
      const inside = x >= 0 && y >= 0 && x < config.width && y < config.height;
      $("viewer-position").textContent = inside ? `x ${Math.round(x)}, y ${Math.round(y)}` : "outside the slide";
      if (state.tool === "polygon" && state.draft) { state.draft.to = [x, y]; redraw(); }
    },
  });
}

// --- import and export ----------------------------------------------------------------------------------

async function exportAnnotations() {
  const collection = await call("GET", `${config.api}annotations/`);
  const blob = new Blob([JSON.stringify(collection, null, 2)], { type: "application/geo+json" });
  const link = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(blob), download: `slide-${config.slide}-annotations.geojson`,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function importAnnotations(file) {
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (error) {
    return say("annotation-status", `${file.name} is not JSON: ${error.message}`, "error");
  }
  try {
    const added = await call("POST", `${config.api}annotations/`, { json: data });
    say("annotation-status", `${added.features.length} annotation${added.features.length === 1 ? "" : "s"} imported.`);
  } catch (error) {
    say("annotation-status", `Not imported: ${error.message}`, "error");
  }
  await loadAnnotations();
}

// --- the viewer -------------------------------------------------------------------------------------------

function openViewer() {
  const viewer = OpenSeadragon({
    element: $("viewer"),
    tileSources: config.dzi,
    prefixUrl: config.osdImages,
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    showRotationControl: true,
    showFullPageControl: true,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    crossOriginPolicy: false,
    loadTilesWithAjax: false,
    // The AI map (overlay.js) is a second image of exactly the slide's size and place, so the
    // viewport's image coordinates stay the slide's.
    silenceMultiImageWarnings: true,
  });
  state.viewer = viewer;
  const scaleBar = document.createElement("div");
  scaleBar.className = "scale-bar";
  scaleBar.innerHTML = "<span></span>";
  scaleBar.hidden = !config.mpp;
  viewer.element.append(scaleBar);
  overlay = document.createElementNS(SVG, "svg");
  overlay.setAttribute("class", "annotation-layer");
  overlay.setAttribute("aria-hidden", "true");
  viewer.element.querySelector(".openseadragon-container").append(overlay);
  viewer.addHandler("tile-loaded", (event) => state.loadedLevels.add(event.tile.level));
  viewer.addHandler("update-viewport", () => { updateReadouts(scaleBar); redraw(); });
  viewer.addHandler("open", async () => {
    updateReadouts(scaleBar);
    await loadAnnotations();
    state.ready = true;
    document.body.dataset.ready = "yes";
  });
  viewer.addHandler("open-failed", (event) => say("slide-message", `The slide cannot be shown: ${event.message}`, "error"));
  setUpDrawing();
  document.querySelectorAll("[data-tool]").forEach((button) => button.addEventListener("click", () => setTool(button.dataset.tool)));
  $("annotations-export").addEventListener("click", exportAnnotations);
  $("annotations-import")?.addEventListener("change", (event) => {
    if (event.target.files[0]) importAnnotations(event.target.files[0]);
    event.target.value = "";
  });
}

// --- sample link and converting again ------------------------------------------------------------------

$("sample-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("slide-sample").value;
  try {
    await call("PATCH", config.api, { json: { sample: value ? Number(value) : null } });
    window.location.reload();
  } catch (error) {
    window.alert(`Not saved: ${error.message}`);
  }
});

$("convert-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const options = {};
  for (const input of event.target.querySelectorAll("input[name]")) options[input.name] = Number(input.value);
  try {
    await call("POST", `${config.api}convert/`, { json: { options } });
    say("convert-status", "Converting again…");
    event.target.querySelector("button").disabled = true;
    watcher.watch(config.slide);
  } catch (error) {
    say("convert-status", `Not started: ${error.message}`, "error");
  }
});

if (config.dzi && window.OpenSeadragon) openViewer();
else document.body.dataset.ready = "yes";
