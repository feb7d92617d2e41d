// Small line charts as inline SVG (no library), and the "training curves" of a job drawn with them.
// A job reports points such as {epoch: 3, loss: 0.41, accuracy: 0.87, val_loss: 0.5, val_accuracy: 0.8};
// each measure gets one chart, with its validation twin (val_*) as a second, dashed line.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 480;
const HEIGHT = 280;
const MARGIN = {top: 40, right: 18, bottom: 46, left: 62};

// Okabe–Ito colours (distinct for colour-blind readers), and a dash and marker shape per line too.
export const STYLES = [
  {colour: "#0072b2", dash: "", marker: "circle"},
  {colour: "#d55e00", dash: "7 4", marker: "square"},
  {colour: "#009e73", dash: "2 3", marker: "diamond"},
  {colour: "#cc79a7", dash: "10 3 2 3", marker: "triangle"},
];

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text != null) node.textContent = text;
  return node;
}

// "Nice" step (1, 2 or 5 times a power of ten) giving about `count` intervals over `span`.
function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

function decimalsOf(step) {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

// Axis range and ticks covering [lo, hi]; `integers` keeps ticks on whole numbers (epochs).
function scaleFor(lo, hi, {fixed = null, integers = false, count = 5} = {}) {
  if (fixed) {
    const step = niceStep(fixed[1] - fixed[0], count);
    return {lo: fixed[0], hi: fixed[1], step, ticks: ticksOf(fixed[0], fixed[1], step)};
  }
  if (hi - lo < 1e-12) {
    const pad = integers ? 1 : Math.abs(hi) * 0.1 || 1;
    hi += pad;
    if (!integers) lo -= pad;
  }
  let step = niceStep(hi - lo, count);
  if (integers) step = Math.max(1, Math.round(step));
  if (!integers) {
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
  }
  return {lo, hi, step, ticks: ticksOf(lo, hi, step)};
}

function ticksOf(lo, hi, step) {
  const ticks = [];
  for (let value = Math.ceil(lo / step - 1e-9) * step; value <= hi + step * 1e-9; value += step) {
    ticks.push(Math.round(value / step) * step);
  }
  return ticks;
}

function marker(shape, x, y, colour) {
  const r = 3.5;
  if (shape === "square") return el("rect", {x: x - r, y: y - r, width: 2 * r, height: 2 * r, fill: colour});
  if (shape === "diamond") {
    return el("polygon", {points: `${x},${y - r - 1} ${x + r + 1},${y} ${x},${y + r + 1} ${x - r - 1},${y}`, fill: colour});
  }
  if (shape === "triangle") {
    return el("polygon", {points: `${x},${y - r - 1} ${x + r + 1},${y + r} ${x - r - 1},${y + r}`, fill: colour});
  }
  return el("circle", {cx: x, cy: y, r, fill: colour});
}

/**
 * A line chart as an <svg> element.
 * options: {title, xLabel, yLabel, series: [{key, label, points: [[x, y], ...], style}], yFixed: [lo, hi],
 *           format: (y) => text for tooltips and the summary}
 */
export function lineChart({title, xLabel, yLabel, series, yFixed = null, format = String}) {
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xScale = scaleFor(Math.min(...xs), Math.max(...xs), {integers: true, count: 6});
  const yScale = scaleFor(Math.min(...ys), Math.max(...ys), {fixed: yFixed});
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const px = (x) => MARGIN.left + ((x - xScale.lo) / (xScale.hi - xScale.lo)) * plotW;
  const py = (y) => MARGIN.top + plotH - ((y - yScale.lo) / (yScale.hi - yScale.lo)) * plotH;
  const round = (v) => Math.round(v * 10) / 10;

  const svg = el("svg", {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart"});
  // What a screen reader says: the title and where each line starts and ends.
  const summary = series.map((s) => {
    const first = s.points[0];
    const last = s.points[s.points.length - 1];
    return `${s.label} from ${format(first[1])} to ${format(last[1])}`;
  }).join("; ");
  const span = `${xLabel.toLowerCase()} ${Math.min(...xs)} to ${Math.max(...xs)}`;
  svg.append(el("title", {}, `${title}: ${summary} (${span}).`));

  const grid = el("g", {class: "grid", "aria-hidden": "true"});
  const yDecimals = decimalsOf(yScale.step);
  for (const tick of yScale.ticks) {
    const y = round(py(tick));
    grid.append(el("line", {x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y}));
    grid.append(el("text", {x: MARGIN.left - 6, y: y + 4, "text-anchor": "end"}, tick.toFixed(yDecimals)));
  }
  for (const tick of xScale.ticks) {
    const x = round(px(tick));
    grid.append(el("line", {class: "tick", x1: x, x2: x, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 5}));
    grid.append(el("text", {x, y: MARGIN.top + plotH + 18, "text-anchor": "middle"}, String(tick)));
  }
  grid.append(el("line", {class: "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right,
    y1: MARGIN.top + plotH, y2: MARGIN.top + plotH}));
  grid.append(el("line", {class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + plotH}));
  grid.append(el("text", {class: "axis-label", x: MARGIN.left + plotW / 2, y: HEIGHT - 8, "text-anchor": "middle"}, xLabel));
  grid.append(el("text", {class: "axis-label", x: 0, y: 0, "text-anchor": "middle",
    transform: `translate(16 ${MARGIN.top + plotH / 2}) rotate(-90)`}, yLabel));
  svg.append(grid);

  // Legend across the top: a sample of each line (colour, dash, marker) and its name.
  const legend = el("g", {class: "legend", "aria-hidden": "true"});
  let legendX = MARGIN.left;
  series.forEach((s, index) => {
    const style = STYLES[(s.style ?? index) % STYLES.length];
    const y = 16;
    legend.append(el("line", {x1: legendX, x2: legendX + 28, y1: y, y2: y, stroke: style.colour,
      "stroke-width": 2.5, "stroke-dasharray": style.dash}));
    legend.append(marker(style.marker, legendX + 14, y, style.colour));
    legend.append(el("text", {x: legendX + 34, y: y + 4}, s.label));
    legendX += 34 + 8 * s.label.length + 24;
  });
  svg.append(legend);

  series.forEach((s, index) => {
    const style = STYLES[(s.style ?? index) % STYLES.length];
    const group = el("g", {class: "series", "data-series": s.key});
    const coords = s.points.map(([x, y]) => `${round(px(x))},${round(py(y))}`).join(" ");
    group.append(el("polyline", {points: coords, fill: "none", stroke: style.colour, "stroke-width": 2.5,
      "stroke-dasharray": style.dash, "stroke-linejoin": "round"}));
    for (const [x, y] of s.points) {
      const dot = marker(style.marker, round(px(x)), round(py(y)), style.colour);
      dot.dataset.point = "";
      dot.append(el("title", {}, `${s.label}, ${xLabel.toLowerCase()} ${x}: ${format(y)}`));
      group.append(dot);
    }
    svg.append(group);
  });
  return svg;
}

// --- a job's series ---------------------------------------------------------------------------

const MEASURES = {
  loss: {title: "Loss", axis: "Loss (lower is better)"},
  accuracy: {title: "Accuracy", axis: "Accuracy (%)", percent: true},
};

function humanise(key) {
  const text = key.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

// The x of each point: its epoch, else its step, else its position; the last point per x wins.
function byX(points) {
  const xKey = points.some((p) => isNumber(p.epoch)) ? "epoch" : points.some((p) => isNumber(p.step)) ? "step" : null;
  const rows = new Map();
  points.forEach((point, index) => {
    const x = xKey ? point[xKey] : index + 1;
    if (isNumber(x)) rows.set(x, point);
  });
  const sorted = [...rows.entries()].sort((a, b) => a[0] - b[0]);
  return {xKey, xLabel: xKey ? humanise(xKey) : "Point", rows: sorted};
}

// One chart per measure: "loss" with "val_loss", "accuracy" with "val_accuracy", and so on.
function measuresOf(rows, xKey) {
  const keys = [];
  for (const [, point] of rows) {
    for (const [key, value] of Object.entries(point)) {
      if (key !== xKey && isNumber(value) && !keys.includes(key)) keys.push(key);
    }
  }
  const bases = [];
  for (const key of keys) {
    const base = key.replace(/^val_/, "");
    if (!bases.includes(base)) bases.push(base);
  }
  const known = Object.keys(MEASURES);
  bases.sort((a, b) => (known.includes(a) ? known.indexOf(a) : 99) - (known.includes(b) ? known.indexOf(b) : 99));
  return bases.map((base) => {
    const twin = keys.includes(`val_${base}`);
    const members = [base, `val_${base}`].filter((key) => keys.includes(key));
    const values = rows.flatMap(([, point]) => members.map((key) => point[key]).filter(isNumber));
    const info = MEASURES[base] || {title: humanise(base), axis: humanise(base)};
    // Accuracies reported as fractions (0..1) are shown as percentages.
    const percent = Boolean(info.percent) && values.every((v) => v >= 0 && v <= 1);
    return {
      base, info, percent,
      series: members.map((key) => ({
        key,
        label: key.startsWith("val_") ? "Validation" : twin || MEASURES[base] ? "Training" : humanise(base),
      })),
    };
  });
}

function formatter(percent, values) {
  if (percent) return (v) => `${(v * 100).toFixed(1)} %`;
  const biggest = Math.max(...values.map(Math.abs), 0);
  const decimals = biggest >= 100 ? 1 : biggest >= 1 ? 3 : 4;
  return (v) => v.toFixed(decimals);
}

/**
 * Draw a job's points into `root`: one chart per measure into its [data-charts] element and every
 * value into the table in its [data-metrics-table] element (the charts' text alternative).
 */
export function drawMetrics(root, points) {
  const {xKey, xLabel, rows} = byX(points.filter((p) => p && typeof p === "object"));
  const measures = measuresOf(rows, xKey);
  const charts = root.querySelector("[data-charts]");
  const figures = measures.map((measure) => {
    const values = rows.flatMap(([, p]) => measure.series.map((s) => p[s.key]).filter(isNumber));
    const format = formatter(measure.percent, values);
    measure.format = format;
    const series = measure.series.map((s, style) => ({
      ...s, style,
      points: rows.filter(([, p]) => isNumber(p[s.key]))
        .map(([x, p]) => [x, measure.percent ? p[s.key] * 100 : p[s.key]]),
    })).filter((s) => s.points.length);
    const figure = document.createElement("figure");
    figure.className = "chart-figure";
    figure.dataset.measure = measure.base;
    const caption = document.createElement("figcaption");
    caption.textContent = `${measure.info.title} per ${xLabel.toLowerCase()}`;
    figure.append(caption, lineChart({
      title: caption.textContent, xLabel, yLabel: measure.info.axis, series,
      yFixed: measure.percent ? [0, 100] : null,
      format: measure.percent ? (v) => `${v.toFixed(1)} %` : format,
    }));
    return figure;
  });
  if (charts) charts.replaceChildren(...figures);

  const holder = root.querySelector("[data-metrics-table]");
  if (!holder) return;
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  const columns = measures.flatMap((m) => m.series.map((s) => ({measure: m, key: s.key,
    title: `${m.info.title} (${s.label.toLowerCase()})`})));
  for (const title of [xLabel, ...columns.map((c) => c.title)]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = title;
    head.append(th);
  }
  const body = table.createTBody();
  for (const [x, point] of rows) {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = String(x);
    row.append(th);
    for (const column of columns) {
      const value = point[column.key];
      row.insertCell().textContent = isNumber(value) ? column.measure.format(value) : "–";
    }
  }
  holder.replaceChildren(table);
}
