// The jobs websocket for slide progress, and the API calls of the slide pages.

// The storage app's API helper: session, CSRF token, the API's own error messages.
import { call } from "../storage/api.js";

export { call };

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
