// The built-in DICOM viewer: the chosen series as a stack of server-rendered images (WADO-RS
// rendered, with the window asked for), scrolled by wheel, keys or slider; zoom and pan by CSS;
// multi-frame instances play as cine; the tag browser shows the current instance's attributes.

const config = JSON.parse(document.getElementById("viewer-config").textContent);
const $ = (id) => document.getElementById(id);
const state = { slice: 0, frame: 1, zoom: 1, x: 0, y: 0, timer: null, loaded: 0 };
window.portalDicomViewer = state;
const instances = config.instances;

function windowParam() {
  const center = $("window-center").value;
  const width = $("window-width").value;
  if (center !== "" && width !== "" && Number(width) > 0) return `?window=${center},${width}`;
  return "";
}

function imageUrl() {
  const instance = instances[state.slice];
  const frame = instance.frames > 1 ? `/frames/${state.frame}` : "";
  return `${config.base}/instances/${instance.sop}${frame}/rendered${windowParam()}`;
}

function show() {
  if (!instances.length) return;
  const instance = instances[state.slice];
  const image = $("stack-image");
  image.src = imageUrl();
  $("slice").value = state.slice + 1;
  $("position").textContent = `Slice ${state.slice + 1} of ${instances.length}` +
    (instance.number != null ? ` (instance ${instance.number})` : "") +
    (instance.frames > 1 ? `, frame ${state.frame} of ${instance.frames}` : "");
  $("cine").hidden = instance.frames <= 1;
  loadTags(instance);
}

let tagsFor = null;
async function loadTags(instance) {
  if (tagsFor === instance.id) return;
  tagsFor = instance.id;
  const response = await fetch(`${config.tags}${instance.id}/tags/`, { credentials: "same-origin" });
  if (!response.ok || tagsFor !== instance.id) return;
  const data = await response.json();
  $("tag-rows").replaceChildren(...data.rows.map((row) => {
    const tr = document.createElement("tr");
    for (const cell of row) tr.append(Object.assign(document.createElement("td"), { textContent: cell }));
    return tr;
  }));
  filterTags();
  document.body.dataset.tags = instance.sop;
}

function filterTags() {
  const wanted = $("tag-filter").value.trim().toLowerCase();
  for (const row of $("tag-rows").children) row.hidden = wanted && !row.textContent.toLowerCase().includes(wanted);
}

function go(step) {
  state.slice = Math.min(instances.length - 1, Math.max(0, state.slice + step));
  state.frame = 1;
  show();
}

function transform() {
  $("stack-image").style.transform = `translate(${state.x}px, ${state.y}px) scale(${state.zoom})`;
}

const view = $("stack-view");
view.addEventListener("wheel", (event) => {
  event.preventDefault();
  if (event.ctrlKey) {
    state.zoom = Math.min(16, Math.max(0.25, state.zoom * (event.deltaY < 0 ? 1.1 : 1 / 1.1)));
    transform();
  } else {
    go(event.deltaY > 0 ? 1 : -1);
  }
}, { passive: false });
view.addEventListener("keydown", (event) => {
  const keys = { ArrowDown: () => go(1), ArrowUp: () => go(-1), PageDown: () => go(10), PageUp: () => go(-10),
    Home: () => go(-instances.length), End: () => go(instances.length),
    "+": () => { state.zoom *= 1.25; transform(); }, "-": () => { state.zoom /= 1.25; transform(); } };
  if (keys[event.key]) {
    event.preventDefault();
    keys[event.key]();
  }
});
let drag = null;
view.addEventListener("pointerdown", (event) => { drag = { x: event.clientX - state.x, y: event.clientY - state.y }; view.setPointerCapture(event.pointerId); });
view.addEventListener("pointermove", (event) => { if (drag) { state.x = event.clientX - drag.x; state.y = event.clientY - drag.y; transform(); } });
view.addEventListener("pointerup", () => { drag = null; });
$("zoom-reset").addEventListener("click", () => { Object.assign(state, { zoom: 1, x: 0, y: 0 }); transform(); });
$("slice").max = Math.max(1, instances.length);
$("slice").addEventListener("input", (event) => { state.slice = Number(event.target.value) - 1; state.frame = 1; show(); });
$("window-preset").addEventListener("change", (event) => {
  const value = config.presets[event.target.value] || "";
  [$("window-center").value, $("window-width").value] = value ? value.split(",") : ["", ""];
  show();
});
let pending = null;
for (const id of ["window-center", "window-width"]) {
  $(id).addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(show, 250); });
}
$("tag-filter").addEventListener("input", filterTags);
$("cine").addEventListener("click", () => {
  if (state.timer) {
    clearInterval(state.timer);
    state.timer = null;
    $("cine").textContent = "Play";
    return;
  }
  $("cine").textContent = "Stop";
  state.timer = setInterval(() => {
    const instance = instances[state.slice];
    state.frame = state.frame >= instance.frames ? 1 : state.frame + 1;
    show();
  }, 150);
});
$("stack-image").addEventListener("load", () => { state.loaded += 1; document.body.dataset.loaded = String(state.loaded); });
show();
document.body.dataset.ready = "yes";
