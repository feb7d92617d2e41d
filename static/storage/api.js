// Calls to the storage API with the page's session (CSRF token from the cookie); errors carry the
// API's own message ({"detail", "errors"}), so pages can show it as it is.

import { fromBase64, importDataKey, toBase64, unwrapDataKey } from "./crypto.js";
import { loadKey } from "./keystore.js";

export const API = "/api/v1";
const csrf = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

function messageOf(status, body) {
  if (body && body.errors && Object.keys(body.errors).length) {
    return Object.entries(body.errors)
      .map(([field, messages]) => (field === "non_field_errors" ? "" : `${field}: `) + [].concat(messages).join(" "))
      .join(" ");
  }
  if (body && body.detail) return body.detail;
  if (status === 0) return "The portal cannot be reached. Check your connection and try again.";
  return `The portal answered with an error (${status}).`;
}

/** fetch() the API; JSON in and out unless `raw`. Throws ApiError with the API's message. */
export async function call(method, path, { json, body, headers = {}, raw = false, signal } = {}) {
  const options = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD") options.headers["X-CSRFToken"] = csrf();
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (body !== undefined) {
    options.body = body;
  }
  let response;
  try {
    response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(messageOf(0), 0, null);
  }
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      /* not JSON */
    }
    throw new ApiError(messageOf(response.status, data), response.status, data);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** Unwrap the dataset's data key with a key kept in this browser: {raw, base64, cryptoKey, keyName}. */
export async function dataKeyOf(user, mnemonic) {
  const wraps = await call("GET", `datasets/${mnemonic}/wraps/`);
  if (!wraps.length) {
    throw new ApiError("None of your active keys can open this dataset. Ask its owner to share it again " +
      "after your key was activated.", 403, null);
  }
  for (const wrap of wraps) {
    const kept = await loadKey(user, wrap.key_fingerprint);
    if (!kept) continue;
    const raw = await unwrapDataKey(kept.privateKey, wrap.wrapped);
    return { raw, base64: toBase64(raw), cryptoKey: await importDataKey(raw), keyName: wrap.key_name };
  }
  const names = wraps.map((w) => `“${w.key_name}”`).join(", ");
  throw new ApiError(`The private key for this dataset is not in this browser. Import your key ${names} ` +
    "on the Keys page (file, text or QR code), then try again.", 400, { code: "key_not_in_browser" });
}

export { fromBase64 };
