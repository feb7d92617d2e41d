// The slide list: conversions in progress update live (state, message, progress); a slide that
// becomes ready gets its thumbnail.

import { STATE_LABELS, call, slideWatcher } from "./api.js";

const FINAL = new Set(["ready", "failed"]);

function show(card, slide) {
  card.dataset.state = slide.state;
  const badge = card.querySelector('[data-field="slide-state"]');
  badge.textContent = STATE_LABELS[slide.state] || slide.state;
  badge.className = `badge state-${slide.state}`;
  card.querySelector('[data-field="slide-message"]').textContent = slide.state === "ready" ? "" : slide.message;
  card.querySelector('[data-field="slide-progress"]').hidden = FINAL.has(slide.state);
  if (slide.state === "ready" && slide.thumbnail && !card.querySelector(".slide-thumb img")) {
    const image = Object.assign(document.createElement("img"), { src: slide.thumbnail, alt: "" });
    card.querySelector(".slide-thumb").replaceChildren(image);
  }
}

const cards = new Map([...document.querySelectorAll("[data-slide]")].map((card) => [Number(card.dataset.slide), card]));
const watcher = slideWatcher(
  async (id, job) => {
    const card = cards.get(id);
    if (!card) return;
    card.querySelector('[data-field="slide-message"]').textContent = job.message || "";
    const bar = card.querySelector('[data-field="slide-progress"]');
    bar.hidden = false;
    bar.value = Math.floor((job.progress || 0) * 100);
    if (["succeeded", "failed", "cancelled"].includes(job.state)) {
      const slide = await call("GET", `/api/v1/slides/${id}/`);
      show(card, slide);
      if (FINAL.has(slide.state)) watcher.forget(id);
    }
  },
  (slide) => {
    const card = cards.get(slide.id);
    if (card) show(card, slide);
    if (FINAL.has(slide.state)) watcher.forget(slide.id);
  },
);
for (const [id, card] of cards) if (!FINAL.has(card.dataset.state)) watcher.watch(id);
document.body.dataset.ready = "yes";
