// The project sheet: rows × properties from the API, edited live through the project's websocket.
//
// Data flow: the matrix comes from GET <api>matrix/ (or ?at= for the past, read-only); edits go as
// one batch per user action ({"action": "set", "changes": [...]}) over /ws/metadata/projects/<id>/
// (REST POST <api>events/ when the socket is down); every committed batch, ours and others', comes
// back as a "metadata.batch" message and is applied in the order the server committed it, so all
// open sheets end with the same, latest value. Link cells are resolved through /api/v1/links/ and
// follow the jobs running on their target through the same socket.

import { TabulatorFull as Tabulator } from "../vendor/tabulator/tabulator_esm.min.js";
import { validate } from "./validate.js";

const config = JSON.parse(document.getElementById("sheet-config").textContent);
const $ = (id) => document.getElementById(id);
const csrf = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";

// POST to the API with the session's CSRF token; `body` (if any) is sent as JSON.
function post(url, body) {
  const headers = { "X-CSRFToken": csrf(), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(url, {
    method: "POST", credentials: "same-origin", headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

function smallButton(label, className, onClick, title = "") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `button small ${className}`.trim();
  button.textContent = label;
  if (title) button.title = title;
  button.addEventListener("click", onClick);
  return button;
}

const state = {
  kind: config.kinds[0]?.key,
  rowsByKind: new Map(),      // kind key -> array of row objects
  rowsById: new Map(),        // entity id -> row object (shared with Tabulator's data)
  mnemonics: new Map(),       // entity id -> mnemonic
  at: null,                   // Date shown when looking at the past
  diff: new Map(),            // "id|key" -> {before, after} while looking at the past
  remote: new Map(),          // "id|key" -> {author, timestamp} of the last edit by someone else
  links: new Map(),           // "type|id" -> resolved target (+ job)
  socket: null,
  pending: new Map(),         // ref -> changes sent, awaiting "saved"
  seq: 0,
};
const columnsOf = (kind) => config.columns.filter((c) => c.kind === kind);
const columnByKey = (kind, key) => config.columns.find((c) => c.kind === kind && c.key === key);

// --- status line ---------------------------------------------------------------------------

function say(text, kind = "info") {
  const el = $("sheet-message");
  el.textContent = text;
  el.dataset.kind = kind;
}

function setConnection(s) {
  const el = $("sheet-connection");
  el.dataset.state = s;
  el.textContent = { open: "Live", connecting: "Connecting…", closed: "Offline – changes are saved over HTTP", denied: "No live access" }[s] || s;
}

// --- cells ---------------------------------------------------------------------------------

function display(value) {
  if (value === null || value === undefined) return "";
  if (value === true) return "yes";
  if (value === false) return "no";
  return String(value);
}

function cellFormatter(column) {
  return (cell) => {
    const el = cell.getElement();
    const row = cell.getRow().getData();
    const value = cell.getValue();
    const cellKey = `${row._id}|${column.key}`;
    el.classList.remove("cell-invalid", "cell-remote", "cell-diff", "cell-link-missing");
    el.removeAttribute("title");
    const notes = [];
    const problem = validate(column, value);
    if (problem) { el.classList.add("cell-invalid"); notes.push(problem); }
    const remote = state.remote.get(cellKey);
    if (remote) {
      el.classList.add("cell-remote");
      el.dataset.author = remote.author;
      notes.push(`Changed by ${remote.author} at ${new Date(remote.timestamp).toLocaleTimeString()}`);
    } else {
      delete el.dataset.author;
    }
    const change = state.diff.get(cellKey);
    if (change) {
      el.classList.add("cell-diff");
      notes.push(`Then: ${display(change.before) || "(empty)"} – now: ${display(change.after) || "(empty)"}`);
    }
    if (notes.length) el.title = notes.join("\n");
    if (column.link && value !== null && value !== undefined && value !== "") return linkCell(column, value, el);
    return escapeHtml(display(value));
  };
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function linkCell(column, value, el) {
  if (!Number.isInteger(value)) return escapeHtml(display(value));
  const target = state.links.get(`${column.type}|${value}`);
  if (!target) return `<span class="link-pending">${value}</span>`;
  if (!target.found) {
    el.classList.add("cell-link-missing");
    el.title = [el.title, `No ${column.type} ${value} that you may see (it does not exist, or you have no access).`].filter(Boolean).join("\n");
    return `<span class="link-missing" aria-label="${column.type} ${value} not found">⚠ ${value}</span>`;
  }
  const job = target.job;
  const running = job && !["succeeded", "failed", "cancelled"].includes(job.state);
  const badge = running
    ? `<span class="link-state running">${escapeHtml(job.label || job.kind)} ${Math.floor((job.progress || 0) * 100)} %</span>`
    : job && job.state === "failed"
      ? `<span class="link-state failed" title="${escapeHtml(job.error || "")}">failed</span>`
      : target.state ? `<span class="link-state">${escapeHtml(target.state)}</span>` : "";
  return `<a href="${escapeHtml(target.url)}">${escapeHtml(target.label || String(value))}</a> ${badge}`;
}

function readOnly() { return !config.canWrite || state.at !== null; }

function listValues(column) {
  // Autocomplete: the template's options first (with their descriptions), then values in use.
  return () => {
    const seen = new Set();
    const items = [];
    for (const option of column.options) {
      const value = String(option.value);
      if (!seen.has(value)) { seen.add(value); items.push({ label: option.description ? `${value} – ${option.description}` : value, value }); }
    }
    if (column.type === "boolean") for (const v of ["yes", "no"]) if (!seen.has(v)) { seen.add(v); items.push({ label: v, value: v }); }
    for (const row of state.rowsByKind.get(column.kind) || []) {
      const v = row[column.key];
      if (v === null || v === undefined || v === "") continue;
      const text = display(v);
      if (!seen.has(text)) { seen.add(text); items.push({ label: text, value: text }); }
      if (items.length > 500) break;
    }
    return items;
  };
}

function editorFor(column) {
  if (column.options.length || column.type === "choice" || column.type === "boolean" || column.type === "text") {
    return ["list", {
      valuesLookup: listValues(column), autocomplete: true, freetext: true, allowEmpty: true,
      listOnEmpty: true, clearable: true, filterDelay: 50, placeholderEmpty: "Type a new value",
    }];
  }
  return ["input", {}];
}

function tabulatorColumns(kind) {
  const kindInfo = config.kinds.find((k) => k.key === kind);
  const columns = [
    {
      title: "ID", field: "_mnemonic", frozen: true, editable: false, headerFilter: "input", width: 110,
      formatter: (cell) => `<a href="${config.entityUrl}${encodeURIComponent(cell.getValue())}/">${escapeHtml(cell.getValue())}</a>`,
      headerTooltip: "The row's short id; it links to the row's own page with its QR code.",
    },
  ];
  if (kindInfo && kindInfo.parent) {
    columns.push({
      title: config.kinds.find((k) => k.key === kindInfo.parent)?.label || "Parent", field: "_parent",
      editable: false, headerFilter: "input", width: 110,
      formatter: (cell) => cell.getValue() ? `<a href="${config.entityUrl}${encodeURIComponent(cell.getValue())}/">${escapeHtml(cell.getValue())}</a>` : "",
    });
  }
  for (const column of columnsOf(kind)) {
    const [editor, editorParams] = editorFor(column);
    columns.push({
      title: column.unit ? `${column.label} (${column.unit})` : column.label,
      field: column.key,
      headerTooltip: [column.description, column.examples.length ? `e.g. ${column.examples.join(", ")}` : ""].filter(Boolean).join("\n") || column.key,
      editor, editorParams,
      editable: () => !readOnly(),
      formatter: cellFormatter(column),
      headerFilter: "input",
      headerFilterFunc: (term, value) => display(value).toLowerCase().includes(String(term).toLowerCase()),
      sorter: column.type === "integer" || column.type === "decimal" ? "number" : "string",
      width: Math.min(260, Math.max(130, 16 + 8 * (column.label.length + (column.unit ? column.unit.length + 3 : 0)))),
      contextMenu: [{ label: "Cell history", action: (e, cell) => showHistory(cell) }],
    });
  }
  return columns;
}

// --- the table -----------------------------------------------------------------------------

let table = null;
let activeCell = null;

function buildTable() {
  table = new Tabulator("#sheet", {
    height: "calc(100vh - 15rem)",
    renderVertical: "virtual",
    renderHorizontal: "virtual",  // only the columns in view are drawn (sheets have 100+)
    index: "_id",
    layout: "fitData",
    columns: tabulatorColumns(state.kind),
    data: state.rowsByKind.get(state.kind) || [],
    selectableRange: 1,
    selectableRangeColumns: true,
    selectableRangeRows: true,
    selectableRangeClearCells: true,
    selectableRangeClearCellsValue: null,
    editTriggerEvent: "dblclick",
    clipboard: "copy",
    clipboardCopyRowRange: "range",
    clipboardCopyStyled: false,
    clipboardCopyConfig: { rowHeaders: false, columnHeaders: false },
    rowHeader: { resizable: false, frozen: true, width: 48, hozAlign: "center", formatter: "rownum", headerSort: false, editable: false },
    columnDefaults: { headerSortTristate: true },
    placeholder: "No rows yet" + (config.canWrite ? " – add some with “Add rows”." : "."),
  });
  table.on("cellEdited", (cell) => {
    const field = cell.getField();
    if (field.startsWith("_")) return;
    queueChange({ entity: cell.getRow().getData()._id, property: field, value: normalizeTyped(cell.getValue()) });
  });
  table.on("cellClick", (e, cell) => { activeCell = cell; });
  table.on("rangeChanged", (range) => {
    const cells = range.getCells();
    if (cells.length && cells[0].length) activeCell = cells[0][0];
  });
  table.on("dataFiltered", (filters, rows) => { countRows(rows.length); });
  table.on("tableBuilt", () => { countRows(); table.element.addEventListener("paste", onPaste, true); });
  table.element.addEventListener("keydown", onKeyDown);
}

function countRows(visible) {
  const all = (state.rowsByKind.get(state.kind) || []).length;
  const shown = visible ?? all;
  $("sheet-count").textContent = shown === all ? `${all} rows` : `${shown} of ${all} rows shown (filtered)`;
}

function normalizeTyped(value) {
  if (value === "" || value === undefined) return null;
  return value;
}

// Typing a character on a selected cell starts editing it with that character, like a spreadsheet.
function onKeyDown(e) {
  if (readOnly() || e.ctrlKey || e.metaKey || e.altKey) {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "d") { e.preventDefault(); fillDown(); }
    if (e.altKey && e.key.toLowerCase() === "h") { e.preventDefault(); showHistory(currentCell()); }
    return;
  }
  if (e.key === "F2") { const cell = currentCell(); if (cell) { e.preventDefault(); cell.edit(); } return; }
  if (e.key.length !== 1 || e.target.tagName === "INPUT") return;
  const cell = currentCell();
  if (!cell || cell.getField().startsWith("_")) return;
  e.preventDefault();
  cell.edit(true);
  // The editor may open at once or on the next frame; keys typed meanwhile land in it, so the
  // first key is put in front of whatever it holds by then.
  const put = (input) => {
    input.value = e.key + input.value;
    input.dispatchEvent(new Event("input", { bubbles: true }));
  };
  const input = cell.getElement().querySelector("input, textarea");
  if (input) put(input);
  else requestAnimationFrame(() => { const later = cell.getElement().querySelector("input, textarea"); if (later) put(later); });
}

function currentCell() {
  const ranges = table.getRanges();
  if (ranges.length) {
    const cells = ranges[0].getCells();
    if (cells.length && cells[0].length) return cells[0][0];
  }
  return activeCell;
}

function selectedBlock() {
  // The active range as rows × fields (visible order), or null.
  const ranges = table.getRanges();
  if (!ranges.length) return null;
  const rows = ranges[0].getRows().map((r) => r.getData());
  const fields = ranges[0].getColumns().map((c) => c.getField()).filter((f) => f && !f.startsWith("_"));
  return rows.length && fields.length ? { rows, fields } : null;
}

// Paste a block from Excel / LibreOffice (tab-separated, quoted cells may hold line breaks).
function parseClipboard(text) {
  const rows = [];
  let row = [], cell = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { cell += '"'; i++; }
      else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"' && cell === "") quoted = true;
    else if (ch === "\t") { row.push(cell); cell = ""; }
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(cell); rows.push(row); row = []; cell = "";
    } else cell += ch;
  }
  if (cell !== "" || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

function onPaste(e) {
  if (readOnly() || e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") return;
  const start = currentCell();
  if (!start) return;
  e.preventDefault();
  e.stopPropagation();
  const data = parseClipboard(e.clipboardData.getData("text/plain"));
  if (!data.length) return;
  const visibleRows = table.getRows("active");
  const visibleFields = table.getColumns().filter((c) => c.isVisible()).map((c) => c.getField());
  const rowIndex = visibleRows.findIndex((r) => r.getData()._id === start.getRow().getData()._id);
  const colIndex = visibleFields.indexOf(start.getField());
  const block = selectedBlock();
  // A single copied value pasted into a larger selection fills the selection, as in Excel.
  const height = block && data.length === 1 && data[0].length === 1 ? block.rows.length : data.length;
  const width = block && data.length === 1 && data[0].length === 1 ? block.fields.length : Math.max(...data.map((r) => r.length));
  const changes = [];
  let skippedRows = 0, skippedCols = 0;
  for (let r = 0; r < height; r++) {
    const row = visibleRows[rowIndex + r];
    if (!row) { skippedRows++; continue; }
    for (let c = 0; c < width; c++) {
      const field = visibleFields[colIndex + c];
      const value = data[r % data.length][c % data[r % data.length].length] ?? "";
      if (!field || field.startsWith("_")) { if (!field) skippedCols++; continue; }
      changes.push({ entity: row.getData()._id, property: field, value: value.trim() === "" ? null : value });
    }
  }
  applyLocal(changes);
  send(changes, "Pasted");
  if (skippedRows) say(`${skippedRows} pasted rows went past the last row and were left out; add rows first.`, "warn");
  else if (skippedCols) say("Some pasted columns went past the last column and were left out.", "warn");
}

function fillDown() {
  if (readOnly()) return;
  const block = selectedBlock();
  if (!block || block.rows.length < 2) { say("Select a block of at least two rows to fill down (Shift+↓)."); return; }
  const changes = [];
  for (const field of block.fields) {
    const value = block.rows[0][field] ?? null;
    for (const row of block.rows.slice(1)) changes.push({ entity: row._id, property: field, value });
  }
  applyLocal(changes);
  send(changes, "Filled down");
}

function applyLocal(changes) {
  const updates = new Map();
  for (const c of changes) {
    const row = state.rowsById.get(c.entity);
    if (!row) continue;
    row[c.property] = c.value;
    updates.set(c.entity, { ...(updates.get(c.entity) || { _id: c.entity }), [c.property]: c.value });
  }
  if (updates.size && table) table.updateData([...updates.values()]);
}

// --- saving --------------------------------------------------------------------------------

let queued = [];
let flushTimer = null;

function queueChange(change) {
  queued.push(change);
  clearTimeout(flushTimer);
  flushTimer = setTimeout(() => { const batch = queued; queued = []; send(batch, "Edited"); }, 30);
}

function send(changes, verb) {
  if (!changes.length) return;
  const ref = `r${++state.seq}`;
  state.pending.set(ref, changes);
  say(`${verb}: saving ${changes.length} cell${changes.length === 1 ? "" : "s"}…`);
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ action: "set", ref, changes }));
    return;
  }
  post(`${config.api}events/`, { changes }).then(async (response) => {
    const body = await response.json().catch(() => ({}));
    if (response.ok) onSaved({ ref, ...body, batch: body.batch });
    else onSaveError({ ref, detail: (body.non_field_errors || [body.detail || `HTTP ${response.status}`]).join(" "), errors: body });
    if (response.ok) reloadRows(false);  // no socket: fetch what others did too
  }).catch(() => onSaveError({ ref, detail: "The server could not be reached; your change was not saved." }));
}

function onSaved(message) {
  state.pending.delete(message.ref);
  const invalid = (message.invalid || []).length;
  say(message.written ? `Saved ${message.written} change${message.written === 1 ? "" : "s"}${invalid ? ` (${invalid} do not fit their column – shown red)` : ""}.` : "No change: the cells already had these values.", invalid ? "warn" : "ok");
}

function onSaveError(message) {
  state.pending.delete(message.ref);
  say(`Not saved: ${message.detail}`, "error");
  reloadRows(false);  // show what is really stored
}

// --- live ----------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${config.socket}`);
  state.socket = socket;
  setConnection("connecting");
  socket.onmessage = (e) => onMessage(JSON.parse(e.data));
  socket.onclose = (e) => {
    state.socket = null;
    if (e.code === 4401 || e.code === 4403) { setConnection("denied"); return; }
    setConnection("closed");
    setTimeout(() => { connect(); }, 2000);
  };
}

function onMessage(message) {
  switch (message.type) {
    case "hello":
      setConnection("open");
      watchLinks();
      if (state.everConnected) reloadRows(false);  // catch up on what happened while offline
      state.everConnected = true;
      break;
    case "metadata.batch": onBatch(message); break;
    case "metadata.rows":
      if ((message.entities || []).some((id) => !state.rowsById.has(id)) || message.count > 1000) {
        reloadRows(false);
        if (message.author !== config.user) say(`${message.author || "Someone"} added ${message.count} row${message.count === 1 ? "" : "s"}.`);
      }
      break;
    case "saved": onSaved(message); break;
    case "error": if (message.ref) onSaveError(message); break;
    case "job": onJob(message.job); break;
    default: break;
  }
}

function onBatch(message) {
  if (state.at !== null) { say(`${message.author || "Someone"} changed ${message.count} cells (shown when you go back to now).`); return; }
  if (message.reload) { reloadRows(false); say(`${message.author || "Someone"} changed ${message.count} cells; sheet reloaded.`); return; }
  if (state.buffer) state.buffer.push(message);
  applyBatch(message, true);
}

function applyBatch(message, live) {
  const mine = message.author === config.user;
  const updates = new Map();
  let unknown = false;
  for (const cell of message.cells) {
    const row = state.rowsById.get(cell.entity);
    if (!row) { unknown = true; continue; }
    row[cell.property] = cell.value;
    const cellKey = `${cell.entity}|${cell.property}`;
    if (mine) state.remote.delete(cellKey);
    else state.remote.set(cellKey, { author: message.author, timestamp: message.timestamp });
    updates.set(cell.entity, { ...(updates.get(cell.entity) || { _id: cell.entity }), [cell.property]: cell.value });
  }
  if (table && updates.size) {
    table.updateData([...updates.values()]).then(() => {
      for (const id of updates.keys()) table.getRow(id)?.reformat();
    });
  }
  if (!live) return;
  if (unknown && !state.buffer) reloadRows(false);
  if (!mine) say(`${message.author} changed ${message.count} cell${message.count === 1 ? "" : "s"}.`);
  const linkTypes = new Map(config.columns.filter((c) => c.link).map((c) => [c.key, c.type]));
  if (message.cells.some((c) => linkTypes.has(c.property) && Number.isInteger(c.value)
      && !state.links.has(`${linkTypes.get(c.property)}|${c.value}`))) resolveLinks();
}

function onJob(job) {
  if (!job.target) return;
  for (const [key, target] of state.links) {
    if (target.found && target.object === job.target.type && target.id === job.target.id) {
      target.job = job;
      if (job.state === "succeeded") resolveLinks([key]);
      redrawLinkCells(key);
    }
  }
}

// --- link cells ------------------------------------------------------------------------------

async function resolveLinks() {
  const wanted = new Map();  // type -> Set of ids
  for (const column of config.columns.filter((c) => c.link)) {
    for (const row of state.rowsByKind.get(column.kind) || []) {
      const v = row[column.key];
      if (Number.isInteger(v)) {
        if (!wanted.has(column.type)) wanted.set(column.type, new Set());
        wanted.get(column.type).add(v);
      }
    }
  }
  for (const [type, ids] of wanted) {
    const list = [...ids];
    for (let i = 0; i < list.length; i += 1000) {
      const response = await fetch(`/api/v1/links/${type}/?ids=${list.slice(i, i + 1000).join(",")}`, { credentials: "same-origin" });
      if (!response.ok) continue;
      const body = await response.json();
      for (const target of body.results) {
        const key = `${type}|${target.id}`;
        const job = state.links.get(key)?.job;
        state.links.set(key, { ...target, job });
      }
    }
  }
  watchLinks();
  if (table) table.getRows().forEach((r) => r.reformat());
}

function watchLinks() {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  for (const target of state.links.values()) {
    if (target.found && target.object && !target.watched) {
      state.socket.send(JSON.stringify({ action: "watch", object: target.object, id: target.id }));
      target.watched = true;
    }
  }
}

function redrawLinkCells(key) {
  const [type, id] = key.split("|");
  const fields = config.columns.filter((c) => c.link && c.type === type && c.kind === state.kind).map((c) => c.key);
  for (const row of state.rowsByKind.get(state.kind) || []) {
    if (fields.some((f) => row[f] === Number(id))) table.getRow(row._id)?.reformat();
  }
}

// --- loading, kinds, the past -------------------------------------------------------------

// Rows shown at once; the rest follow in the background (`?all=1` waits for every row first).
const FIRST_PAGE = new URLSearchParams(location.search).has("all") ? 0 : 100;

async function loadMatrix(at, limit) {
  const params = new URLSearchParams();
  if (at) params.set("at", at.toISOString());
  if (limit) params.set("limit", String(limit));
  const url = `${config.api}matrix/${params.size ? `?${params}` : ""}`;
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.detail || Object.values(body).flat().join(" ") || `HTTP ${response.status}`);
  }
  return response.json();
}

// While a full load is on its way, batches keep arriving; they are applied to the rows shown and
// kept, then applied again (in commit order) to the loaded rows, so no edit is lost.
async function withBuffer(load) {
  state.buffer = [];
  try {
    const matrix = await load();
    takeRows(matrix);
    for (const message of state.buffer) applyBatch(message, false);
  } finally {
    state.buffer = null;
  }
}

function takeRows(matrix) {
  state.rowsByKind = new Map(config.kinds.map((k) => [k.key, []]));
  state.rowsById = new Map();
  state.mnemonics = new Map(matrix.rows.map((r) => [r.id, r.mnemonic]));
  for (const r of matrix.rows) {
    const row = { _id: r.id, _mnemonic: r.mnemonic, _parent: r.parent || "", ...r.values };
    if (!state.rowsByKind.has(r.kind)) state.rowsByKind.set(r.kind, []);
    state.rowsByKind.get(r.kind).push(row);
    state.rowsById.set(r.id, row);
  }
}

async function reloadRows(showMessage = true) {
  try {
    await withBuffer(() => loadMatrix(state.at));
  } catch (error) {
    say(`Could not load the sheet: ${error.message}`, "error");
    return;
  }
  if (table) {
    await table.replaceData(state.rowsByKind.get(state.kind) || []);
    countRows();
  }
  renderKinds();
  if (showMessage) say("Sheet loaded.");
  resolveLinks();
}

function renderKinds() {
  const box = $("sheet-kinds");
  box.replaceChildren();
  if (config.kinds.length < 2) return;
  for (const kind of config.kinds) {
    const button = document.createElement("button");
    button.type = "button";
    button.role = "tab";
    button.className = "button small kind-tab";
    button.setAttribute("aria-selected", String(kind.key === state.kind));
    button.textContent = `${kind.label} (${(state.rowsByKind.get(kind.key) || []).length})`;
    button.addEventListener("click", () => switchKind(kind.key));
    box.append(button);
  }
}

function switchKind(kind) {
  state.kind = kind;
  table.setColumns(tabulatorColumns(kind));
  table.replaceData(state.rowsByKind.get(kind) || []).then(() => countRows());
  renderKinds();
}

async function showPast(event) {
  event.preventDefault();
  const value = $("as-of").value;
  if (!value) { say("Choose a date and time first.", "warn"); return; }
  const at = new Date(value);
  if (Number.isNaN(at.getTime()) || at > new Date()) { say("Choose a moment in the past.", "warn"); return; }
  state.at = at;
  try {
    const [matrix, diff] = await Promise.all([
      loadMatrix(at),
      fetch(`${config.api}matrix/difference/?since=${encodeURIComponent(at.toISOString())}`, { credentials: "same-origin" }).then((r) => r.json()),
    ]);
    takeRows(matrix);
    state.diff = new Map((Array.isArray(diff) ? diff : []).map((d) => [`${d.entity}|${d.property}`, d]));
  } catch (error) {
    state.at = null;
    say(`Could not load the sheet at that moment: ${error.message}`, "error");
    return;
  }
  document.body.classList.add("sheet-past");
  $("back-to-now").hidden = false;
  document.querySelectorAll("[data-edit-tool]").forEach((el) => { el.hidden = true; });
  const banner = $("as-of-banner");
  banner.hidden = false;
  banner.textContent = `Read-only: the sheet as it was on ${at.toLocaleString()}. ${state.diff.size} cell${state.diff.size === 1 ? "" : "s"} changed since (marked; hover to compare with now).`;
  await table.replaceData(state.rowsByKind.get(state.kind) || []);
  renderKinds();
  countRows();
}

async function backToNow() {
  state.at = null;
  state.diff = new Map();
  document.body.classList.remove("sheet-past");
  $("back-to-now").hidden = true;
  $("as-of-banner").hidden = true;
  document.querySelectorAll("[data-edit-tool]").forEach((el) => { el.hidden = false; });
  await reloadRows(false);
  say("Back to the current sheet.");
}

// --- history ---------------------------------------------------------------------------------

async function showHistory(cell) {
  if (!cell || cell.getField().startsWith("_")) { say("Select a cell of a property column first."); return; }
  const row = cell.getRow().getData();
  const column = columnByKey(state.kind, cell.getField());
  const body = $("history-body");
  $("history-title").textContent = `${row._mnemonic} · ${column.label}`;
  body.textContent = "Loading…";
  $("history-dialog").showModal();
  const response = await fetch(`${config.api}entities/${row._id}/history/?property=${encodeURIComponent(column.key)}`, { credentials: "same-origin" });
  if (!response.ok) { body.textContent = "The history could not be loaded."; return; }
  const events = await response.json();
  if (!events.length) { body.textContent = "This cell has never had a value."; return; }
  const list = document.createElement("ol");
  list.className = "history-list";
  for (const ev of events.slice().reverse()) {
    const item = document.createElement("li");
    const when = new Date(ev.timestamp).toLocaleString();
    const who = ev.author || "system";
    let what;
    if (ev.kind === "redaction") what = `redacted an earlier value${ev.comment ? ` (${ev.comment})` : ""}`;
    else if (ev.redacted) what = "set a value that was later redacted";
    else if (ev.value === null) what = "cleared the cell";
    else what = `set “${display(ev.value)}”`;
    item.innerHTML = `<time>${escapeHtml(when)}</time> <strong>${escapeHtml(who)}</strong> ${escapeHtml(what)}${ev.comment && ev.kind !== "redaction" ? ` <span class="muted">– ${escapeHtml(ev.comment)}</span>` : ""}`;
    if (config.role === "admin" && ev.kind === "set" && !ev.redacted && ev.value !== null) {
      item.append(" ", smallButton("Redact…", "danger", () => redact(ev, cell), "Remove this value from the history (e.g. personal data entered by mistake); recorded in the audit log"));
    }
    list.append(item);
  }
  body.replaceChildren(list);
}

async function redact(ev, cell) {
  const reason = window.prompt(`Why is “${display(ev.value)}” removed from the history? (kept in the audit log)`);
  if (!reason || !reason.trim()) return;
  const response = await post(`${config.api}events/${ev.id}/redact/`, { reason });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { say(`Not redacted: ${Object.values(body).flat().join(" ")}`, "error"); return; }
  say("The value was redacted.", "ok");
  await reloadRows(false);
  showHistory(table.getRow(cell.getRow().getData()._id)?.getCell(cell.getField()) || cell);
}

// --- recent changes and undo ----------------------------------------------------------------

async function showBatches() {
  const body = $("batches-body");
  body.textContent = "Loading…";
  $("batches-dialog").showModal();
  const response = await fetch(`${config.api}batches/`, { credentials: "same-origin" });
  if (!response.ok) { body.textContent = "The changes could not be loaded."; return; }
  const list = (await response.json()).slice(0, 50);
  if (!list.length) { body.textContent = "Nothing has been saved yet."; return; }
  const ol = document.createElement("ol");
  ol.className = "history-list";
  for (const batch of list) {
    const item = document.createElement("li");
    item.innerHTML = `<time>${escapeHtml(new Date(batch.timestamp).toLocaleString())}</time> <strong>${escapeHtml(batch.author || "system")}</strong> changed ${batch.count} cell${batch.count === 1 ? "" : "s"}${batch.comment ? ` <span class="muted">– ${escapeHtml(batch.comment)}</span>` : ""}`;
    if (config.canWrite) {
      const button = smallButton("Undo", "", () => undoBatch(batch, button));
      item.append(" ", button);
    }
    ol.append(item);
  }
  body.replaceChildren(ol);
}

async function undoBatch(batch, button) {
  button.disabled = true;
  const response = await post(`${config.api}batches/${batch.batch}/undo/`);
  const result = await response.json().catch(() => ({}));
  if (!response.ok) { say(`Not undone: ${result.detail || Object.values(result).flat().join(" ")}`, "error"); button.disabled = false; return; }
  const conflicts = result.conflicts.length
    ? ` ${result.conflicts.length} cell${result.conflicts.length === 1 ? " was" : "s were"} changed again since and kept (${result.conflicts.map((c) => `${c.entity} ${c.property}`).join(", ")}).`
    : "";
  say(`Undone: ${result.written} cell${result.written === 1 ? "" : "s"} restored.${conflicts}`, conflicts ? "warn" : "ok");
  showBatches();
}

// --- adding rows -----------------------------------------------------------------------------

async function addRows() {
  const count = Number($("add-count").value || 1);
  if (!Number.isInteger(count) || count < 1 || count > 1000) { say("Add between 1 and 1000 rows at a time.", "warn"); return; }
  const body = { kind: state.kind, count };
  const kindInfo = config.kinds.find((k) => k.key === state.kind);
  if (kindInfo?.parent) {
    const cell = currentCell();
    const parent = cell?.getRow().getData()._parent;
    if (parent) body.parent = parent;
  }
  const response = await post(`${config.api}entities/`, body);
  const result = await response.json().catch(() => ({}));
  if (!response.ok) { say(`Rows not added: ${Object.values(result).flat().join(" ")}`, "error"); return; }
  const rows = result.map((e) => ({ _id: e.id, _mnemonic: e.mnemonic, _parent: e.parent || "" }));
  for (const row of rows) { state.rowsByKind.get(state.kind).push(row); state.rowsById.set(row._id, row); }
  await table.addData(rows, false);
  table.scrollToRow(rows[0]._id, "center", false);
  renderKinds();
  countRows();
  say(`Added ${rows.length} row${rows.length === 1 ? "" : "s"}: ${rows[0]._mnemonic}${rows.length > 1 ? ` … ${rows.at(-1)._mnemonic}` : ""}.`, "ok");
}

// --- start -----------------------------------------------------------------------------------

async function start() {
  if (!config.kinds.length) { say("This project has no kinds of rows yet; a project admin adds them in the project settings."); return; }
  let first;
  performance.mark("sheet:start");
  try {
    first = await loadMatrix(null, FIRST_PAGE);
    performance.mark("sheet:first-page");
  } catch (error) {
    say(`Could not load the sheet: ${error.message}`, "error");
    return;
  }
  takeRows(first);
  performance.mark("sheet:rows");
  const partial = first.total > first.rows.length;
  if (partial) state.buffer = [];
  renderKinds();
  buildTable();
  connect();
  let found = false;
  table.on("tableBuilt", () => {
    performance.mark("sheet:table-built");
    found = goToRequestedRow();
    if (!found && !partial) say("That row is not in this sheet.", "warn");
    if (partial) loadRest().then(() => { if (!found && !goToRequestedRow()) say("That row is not in this sheet.", "warn"); });
  });
  if (partial) say(`Showing the first ${first.rows.length} of ${first.total} rows; loading the rest…`);
  else resolveLinks();
  $("add-rows")?.addEventListener("click", addRows);
  $("fill-down")?.addEventListener("click", fillDown);
  $("show-history").addEventListener("click", () => showHistory(currentCell()));
  $("show-batches").addEventListener("click", showBatches);
  $("clear-filters").addEventListener("click", () => { table.clearHeaderFilter(); table.clearSort(); });
  $("as-of-form").addEventListener("submit", showPast);
  $("back-to-now").addEventListener("click", backToNow);
  window.portalSheet = { table, state, ready: true, complete: !partial };  // for scripts and tests
}

// `?row=S-0001` (from a row's own page): show that row's kind, scroll to the row and select it.
function goToRequestedRow() {
  const wanted = new URLSearchParams(location.search).get("row");
  if (!wanted) return true;
  for (const [kind, rows] of state.rowsByKind) {
    const row = rows.find((r) => r._mnemonic === wanted);
    if (!row) continue;
    if (kind !== state.kind) switchKind(kind);
    setTimeout(() => {
      table.scrollToRow(row._id, "center", false).then(() => {
        const cell = table.getRow(row._id)?.getCells()[1];
        if (cell) { table.addRange(cell, cell); activeCell = cell; }
      });
    }, 0);
    return true;
  }
  return false;  // not loaded (yet)
}

async function loadRest() {
  try {
    await withBuffer(() => loadMatrix(null));
  } catch (error) {
    state.buffer = null;
    say(`Only part of the sheet could be loaded: ${error.message}`, "error");
    return;
  }
  await table.replaceData(state.rowsByKind.get(state.kind) || []);
  renderKinds();
  countRows();
  window.portalSheet.complete = true;
  say("");
  resolveLinks();
}

start();
