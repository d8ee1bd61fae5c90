// hotline-probe console: the few things the pages do in the browser.  No framework, no build:
// a live fleet grid (server-sent events, then the grid fragment re-fetched), the "run now"
// buttons (POST to the API's command endpoint) and the print button.
"use strict";

(function liveFleet() {
  const grid = document.getElementById("grid");
  const badge = document.getElementById("live");
  if (!grid) return;

  // On a narrow screen the grid scrolls in its own box: show the newest rounds (the right
  // end) first, and keep the reader's place when a live update redraws it.
  function scroller() { return grid.querySelector(".grid-scroll"); }
  function fromRight() {
    const box = scroller();
    return box ? box.scrollWidth - box.clientWidth - box.scrollLeft : 0;
  }
  function keep(offset) {
    const box = scroller();
    if (box) box.scrollLeft = box.scrollWidth - box.clientWidth - offset;
  }
  keep(0);
  if (!window.EventSource) return;
  let busy = false, again = false;

  function state(name) {
    if (!badge) return;
    badge.dataset.state = name;
    badge.textContent = name === "live" ? badge.dataset.live : badge.dataset.lost;
  }

  async function refresh() {
    // One fetch at a time; a change during it asks for one more, never for a pile-up.
    if (busy) { again = true; return; }
    busy = true;
    try {
      const reply = await fetch(grid.dataset.fragment, {credentials: "same-origin"});
      if (reply.status === 401) { window.location.reload(); return; }
      if (reply.ok) {
        const offset = fromRight(), html = await reply.text();
        grid.innerHTML = html;
        keep(offset);
        grid.dataset.version = String(Number(grid.dataset.version || "0") + 1);
      }
    } catch (err) {
      console.warn("fleet grid refresh failed", err);
      state("lost");
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const source = new EventSource("/events");
  source.addEventListener("hello", () => state("live"));
  source.addEventListener("change", () => { state("live"); refresh(); });
  source.onerror = () => state("lost");  // EventSource reconnects by itself
})();

(function runNow() {
  for (const button of document.querySelectorAll("button[data-run-target]")) {
    button.addEventListener("click", async () => {
      const target = button.dataset.runTarget, probe = button.dataset.runProbe;
      const out = document.getElementById("reply-" + target);
      button.disabled = true;
      out.textContent = button.dataset.sending;
      try {
        const reply = await fetch(
          "/api/v1/probes/" + encodeURIComponent(probe) + "/commands/run?wait_s=20",
          {method: "POST", credentials: "same-origin",
           headers: {"Content-Type": "application/json", "Accept": "application/json"},
           body: JSON.stringify({target: target})});
        const text = await reply.text();
        let shown = text;
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
        out.textContent = reply.status + " " + reply.statusText + "\n" + shown;
        out.dataset.status = String(reply.status);
      } catch (err) {
        out.textContent = String(err);
        out.dataset.status = "error";
      } finally {
        button.disabled = false;
      }
    });
  }
})();

(function printButtons() {
  for (const button of document.querySelectorAll("button[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
})();
