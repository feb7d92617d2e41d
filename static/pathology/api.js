// Calls to the portal API with the page's session, and the jobs websocket for slide progress.

const csrf = () => (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
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

export async function call(method, path, { json, body, headers = {} } = {}) {
  const options = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (method !== "GET") options.headers["X-CSRFToken"] = csrf();
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (body !== undefined) {
    options.body = body;
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(messageOf(0), 0, null);
  }
  let data = null;
  try {
    data = response.status === 204 ? null : await response.json();
  } catch (error) {
    /* not JSON */
  }
  if (!response.ok) throw new ApiError(messageOf(response.status, data), response.status, data);
  return data;
}

/**
 * Follow conversion jobs of slides: `watch(slideId)` subscribes on the jobs websocket; `onJob(slideId, job)`
 * hears each update. Without a socket, the slides are asked for every two seconds instead.
 */
export function slideWatcher(onJob, onSlide) {
  const watched = new Set();
  let socket = null;
  let polling = null;
  const subscribe = (id) => socket && socket.readyState === 1 &&
    socket.send(JSON.stringify({ action: "subscribe", object: "pathology.slide", id }));
  const poll = () => {
    if (polling) return;
    polling = setInterval(async () => {
      for (const id of watched) {
        try { onSlide(await call("GET", `/api/v1/slides/${id}/`)); } catch (error) { /* next time */ }
      }
    }, 2000);
  };
  try {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${window.location.host}/ws/jobs/`);
    socket.addEventListener("open", () => watched.forEach(subscribe));
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== "job" || !message.job.target) return;
      const target = message.job.target;
      if (target.type === "pathology.slide" && watched.has(Number(target.id))) onJob(Number(target.id), message.job);
    });
    socket.addEventListener("close", poll);
  } catch (error) {
    poll();
  }
  return {
    watch(id) {
      watched.add(Number(id));
      subscribe(Number(id));
    },
    forget(id) { watched.delete(Number(id)); },
  };
}

export const STATE_LABELS = {
  uploaded: "Uploaded", hashing: "Hashing", converting: "Converting", reading_metadata: "Reading metadata",
  ready: "Ready", failed: "Failed",
};
