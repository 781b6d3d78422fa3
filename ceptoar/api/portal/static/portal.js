// Live counts for the operators' pages: an element with data-events names a stream of snapshots
// (server-sent events, JSON); each one updates the numbers, the tile map and the table beside it.
"use strict";

function setText(el, value) {
  if (el && el.textContent !== String(value)) {
    el.textContent = String(value);
  }
}

function updateAlert(root, snap) {
  for (const [state, n] of Object.entries(snap.counts)) {
    setText(root.querySelector(`[data-state="${state}"]`), n);
  }
  setText(root.querySelector("[data-total]"), snap.total);
  for (const key of ["answered", "total", "silent", "bounced"]) {
    for (const el of document.querySelectorAll(`[data-org="${key}"]`)) {
      setText(el, snap.organisations[key]);
    }
  }
  for (const [pref, [answered, total, cls]] of Object.entries(snap.prefectures)) {
    const tile = root.querySelector(`.tile[data-pref="${pref}"]`);
    if (tile) {
      tile.className = tile.className.replace(/\b(none|s\d+)\b/, cls);
      tile.title = tile.title.replace(/: .*$/, `: ${answered} / ${total} 団体が回答`);
      tile.dataset.answered = String(answered);
    }
    const row = root.querySelector(`tr[data-pref="${pref}"]`);
    if (row) {
      setText(row.querySelector("[data-a]"), answered);
      setText(row.querySelector("[data-n]"), total);
    }
  }
  root.dataset.updated = String(Date.now());
}

function updateList(root, snap) {
  for (const [id, counts] of Object.entries(snap.alerts)) {
    const row = root.querySelector(`tr[data-alert="${id}"]`);
    if (!row) {
      continue;
    }
    for (const [key, n] of Object.entries(counts)) {
      setText(row.querySelector(`[data-count="${key}"]`), n);
    }
  }
  root.dataset.updated = String(Date.now());
}

for (const root of document.querySelectorAll("[data-events]")) {
  const source = new EventSource(root.dataset.events);
  const update = root.id === "alert-list" ? updateList : updateAlert;
  source.onmessage = (event) => update(root, JSON.parse(event.data));
}
