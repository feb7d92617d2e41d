// A service worker that turns decrypted chunks, sent by a dataset's page, into an ordinary file
// download streamed to disk: for browsers without showSaveFilePicker (Firefox, Safari), so that a
// large dataset never has to fit in memory.
//
// The page posts {type: "portal-stream", id, fileName, size} with a MessagePort and, once this
// worker answers {registered}, opens `<scope>/<id>/<name>` in a hidden frame (a fetch event may
// otherwise arrive before the message). This worker answers that request with a stream and an
// attachment header; the browser saves it like any download. The stream asks the page for chunks
// ({pull}) only as fast as the browser writes them, a few at a time, so memory stays bounded; the
// page ends it with {done} or {abort} (the download then fails instead of looking complete), and a
// download cancelled in the browser tells the page ({cancelled}).

const waiting = new Map();

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("message", (event) => {
  const data = event.data || {};
  if (data.type !== "portal-stream" || !event.ports[0]) return;
  waiting.set(String(data.id), { port: event.ports[0], fileName: String(data.fileName), size: data.size });
  event.ports[0].postMessage({ registered: true }); // the page opens the download's frame now
  // Forget it if the page never opens it.
  setTimeout(() => waiting.delete(String(data.id)), 60_000);
});

function attachment(fileName) {
  const ascii = fileName.replace(/[^\x20-\x7e]|["\\]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(fileName)}`;
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  const id = url.pathname.slice(scope.pathname.length).split("/")[0];
  const entry = waiting.get(id);
  if (!entry) {
    event.respondWith(new Response("This download is no longer available; start it again from the dataset's page.",
      { status: 404, headers: { "Content-Type": "text/plain; charset=utf-8" } }));
    return;
  }
  waiting.delete(id);
  const { port } = entry;
  let delivered = null; // resolves the pull waiting for its chunk
  const stream = new ReadableStream({
    start(controller) {
      port.onmessage = ({ data }) => {
        if (data.chunk) controller.enqueue(new Uint8Array(data.chunk));
        else if (data.done) controller.close();
        else if (data.abort) controller.error(new Error(data.abort));
        if (delivered) delivered();
      };
      port.postMessage({ opened: true });
    },
    pull() {
      // One chunk asked for at a time, and only while fewer than four wait to be written.
      return new Promise((resolve) => {
        delivered = resolve;
        port.postMessage({ pull: true });
      });
    },
    cancel() {
      port.postMessage({ cancelled: true });
    },
  }, { highWaterMark: 4 });
  const headers = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": attachment(entry.fileName),
    "X-Content-Type-Options": "nosniff",
  };
  if (Number.isSafeInteger(entry.size)) headers["Content-Length"] = String(entry.size);
  event.respondWith(new Response(stream, { headers }));
});
