// Why a stored value does not fit its column – the same rules as metadata/services/values.py
// (validation_message), so the sheet can mark cells red without asking the server for each one.
// Validation informs, it does not block: such values are saved and shown red with this message.

const MAX_TEXT = 10000;
const LINK_NAMES = { dataset: "dataset", slide: "slide", study: "DICOM study" };

function isDate(text) {
  if (typeof text !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(text)) return false;
  const [y, m, d] = text.split("-").map(Number);
  const date = new Date(Date.UTC(y, m - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}

const plain = (n) => String(Number(n));
const patterns = new Map();  // regex text -> RegExp (or null when it does not compile)

function compiled(regex) {
  if (!patterns.has(regex)) {
    let pattern = null;
    try { pattern = new RegExp(`^(?:${regex})$`, "u"); } catch { /* an invalid pattern flags nothing */ }
    patterns.set(regex, pattern);
  }
  return patterns.get(regex);
}

export function validate(column, value) {
  if (value === null || value === undefined) return null;
  const type = column.type;
  const isNumber = typeof value === "number";
  if (type === "integer" && !(isNumber && Number.isInteger(value))) return "Not a whole number.";
  if (type === "decimal" && !isNumber) return "Not a number.";
  if (type === "boolean" && typeof value !== "boolean") return "Not yes or no.";
  if (type === "date" && !isDate(value)) return "Not a date (YYYY-MM-DD).";
  if (LINK_NAMES[type] && !(isNumber && Number.isInteger(value))) return `Not the id of a ${LINK_NAMES[type]}.`;
  if (typeof value === "string" && value.length > MAX_TEXT) return `Longer than ${MAX_TEXT} characters.`;
  if (type === "integer" || type === "decimal") {
    if (column.min !== null && column.min !== undefined && value < column.min) return `Smaller than ${plain(column.min)}.`;
    if (column.max !== null && column.max !== undefined && value > column.max) return `Larger than ${plain(column.max)}.`;
  }
  const options = (column.options || []).map((o) => String(o.value));
  const text = typeof value === "boolean" ? (value ? "True" : "False") : String(value);
  if ((type === "choice" || column.options_only) && options.length && !options.includes(text)) {
    const close = options.find((o) => o.toLowerCase() === text.toLowerCase());
    return close ? `Not one of the options; did you mean '${close}'?` : "Not one of the options.";
  }
  if (column.regex && typeof value === "string") {
    const pattern = compiled(column.regex);
    if (pattern && !pattern.test(value)) return `Does not match the pattern ${column.regex}.`;
  }
  return null;
}
