/* "Listed 5 minutes ago", written by the browser. Pages are cached for minutes, so the
   server writes only dates (a cached "just now" would soon be false); this turns them
   into relative ones, from the visitor's own clock, and keeps them current.
     <time datetime="…" data-ago>7 Mar 2026</time>  the text becomes "5 minutes ago"
                                                     and the date moves to the title;
     <span data-ago="…"></span>                       is filled with "(5 minutes ago)".
   Without this script the dates simply stay. ES5, and never throws. */
(function () {
  "use strict";

  var UNITS = [
    [31536000, "year"],
    [2592000, "month"],
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"]
  ];

  // RFC 3339 with up to nine fraction digits; Date.parse is only sure of three.
  function parse(value) {
    var t = Date.parse(String(value || "").replace(/(\.\d{3})\d+/, "$1"));
    return isNaN(t) ? null : t;
  }

  function ago(then, now) {
    var secs = Math.max(0, Math.floor((now - then) / 1000));
    for (var i = 0; i < UNITS.length; i++) {
      if (secs >= UNITS[i][0]) {
        var n = Math.floor(secs / UNITS[i][0]);
        return n + " " + UNITS[i][1] + (n === 1 ? "" : "s") + " ago";
      }
    }
    return "just now";
  }

  function update() {
    try {
      var els = document.querySelectorAll("[data-ago]");
      var now = Date.now();
      for (var i = 0; i < els.length; i++) {
        var el = els[i];
        var own = el.getAttribute("data-ago");
        var then = parse(own || el.getAttribute("datetime"));
        if (then === null) continue;
        var text = ago(then, now);
        if (own) {
          text = "(" + text + ")";
        } else if (!el.getAttribute("title")) {
          el.setAttribute("title", el.textContent);
        }
        if (el.textContent !== text) el.textContent = text;
      }
    } catch (err) {
      /* Cosmetic: the dates stay as the server wrote them. */
    }
  }

  function start() {
    update();
    setInterval(update, 30000);
  }

  if (document.readyState === "loading" && document.addEventListener) {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
