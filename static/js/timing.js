/* Shows this page's Server-Timing entries (cache, db, render, total) in the footer.
   Written in ES5 and wrapped in try/catch so it never throws on old browsers. */
(function () {
  "use strict";

  function format(ms) {
    if (typeof ms !== "number" || !isFinite(ms)) return null;
    return (ms < 1 ? ms.toFixed(2) : ms < 10 ? ms.toFixed(1) : String(Math.round(ms))) + " ms";
  }

  function run() {
    try {
      var el = document.getElementById("server-timing");
      if (!el || !window.performance || typeof performance.getEntriesByType !== "function") return;
      var nav = performance.getEntriesByType("navigation");
      var entries = nav && nav[0] && nav[0].serverTiming;
      if (!entries || !entries.length) return;

      var order = ["cache", "db", "render", "total"];
      var parts = [];
      var seen = {};
      var i, j, e, d;
      for (i = 0; i < order.length; i++) {
        for (j = 0; j < entries.length; j++) {
          e = entries[j];
          if (e && e.name === order[i] && !seen[e.name]) {
            d = format(e.duration);
            if (d) parts.push(e.name + " " + d);
            seen[e.name] = true;
          }
        }
      }
      if (!parts.length) return;
      el.textContent = parts.join(" \u00b7 ");
    } catch (err) {
      /* Timing is cosmetic: ignore any failure. */
    }
  }

  if (document.readyState === "loading" && document.addEventListener) {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
