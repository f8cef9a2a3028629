/* Live cache dashboard: polls /api/cache/metrics, fills the page, draws a chart
   and runs the "See it work" demo. No dependencies; loaded with defer. */
(function () {
  "use strict";

  var root = document.getElementById("dashboard");
  if (!root) return;

  var METRICS_URL = root.getAttribute("data-metrics-url") || "/api/cache/metrics";
  var POLL_MS = parseInt(root.getAttribute("data-poll-ms"), 10) || 2000;
  var WINDOW_MS = 5 * 60 * 1000;
  var FETCH_TIMEOUT_MS = 5000;

  var samples = [];      // { t, ratio (0..1 | null), rps (number | null) }
  var prev = null;       // { t, total } from the previous successful poll
  var timer = null;
  var polling = false;

  function $(id) { return document.getElementById(id); }

  function setText(id, value) {
    var el = $(id);
    // Skip no-op writes so live regions aren't re-announced on every poll.
    if (el && el.textContent !== value) el.textContent = value;
  }

  function num(v) {
    return typeof v === "number" && isFinite(v) ? v : 0;
  }

  function fmtInt(v) {
    return typeof v === "number" && isFinite(v) ? Math.round(v).toLocaleString() : "—";
  }

  function fmtPct(ratio, sampleCount) {
    if (typeof ratio !== "number" || !isFinite(ratio) || !sampleCount) return "—";
    return (ratio * 100).toFixed(1) + "%";
  }

  function setBadge(el, text, kind) {
    if (!el) return;
    var cls = "badge" + (kind ? " badge-" + kind : "");
    if (el.textContent !== text) el.textContent = text;
    if (el.className !== cls) el.className = cls;
  }

  function withTimeout(url, opts, ms) {
    if (typeof AbortController === "undefined") return fetch(url, opts);
    var ctrl = new AbortController();
    var id = setTimeout(function () { ctrl.abort(); }, ms);
    opts.signal = ctrl.signal;
    return fetch(url, opts).finally(function () { clearTimeout(id); });
  }

  /* ---------- rendering the metrics ---------- */

  function renderApp(app) {
    app = app || {};
    var page = app.page || {};
    var query = app.query || {};
    var pageTotal = num(page.hits) + num(page.misses) + num(page.stale) + num(page.bypasses);
    var queryTotal = num(query.hits) + num(query.misses);

    setText("ratio-page", fmtPct(page.hit_ratio, pageTotal));
    setText("ratio-query", fmtPct(query.hit_ratio, queryTotal));
    setText("page-hits", fmtInt(page.hits));
    setText("page-misses", fmtInt(page.misses));
    setText("page-stale", fmtInt(page.stale));
    setText("page-bypasses", fmtInt(page.bypasses));
    setText("query-hits", fmtInt(query.hits));
    setText("query-misses", fmtInt(query.misses));
    setText("invalidations", fmtInt(app.invalidations));
    setText("db-loads", fmtInt(app.db_loads));
    setText("redis-errors", fmtInt(app.redis_errors));

    var errTile = $("redis-errors");
    if (errTile) errTile.classList.toggle("tile-alert", num(app.redis_errors) > 0);

    var circuit = $("circuit-status");
    if (circuit) circuit.hidden = !app.circuit_open;

    return { total: pageTotal, ratio: pageTotal ? num(page.hit_ratio) : null };
  }

  function renderRedis(data) {
    var ok = data.redis_available !== false;
    var banner = $("redis-banner");
    if (banner) banner.hidden = ok;
    root.classList.toggle("redis-down", !ok);
    setBadge($("redis-status"), ok ? "Redis connected" : "Redis unavailable", ok ? "success" : "danger");
    setText("redis-error", ok ? "" : (data.error ? "(" + String(data.error) + ")" : ""));

    if (ok) {
      var ksTotal = num(data.keyspace_hits) + num(data.keyspace_misses);
      setText("ratio-keyspace", fmtPct(data.hit_ratio, ksTotal));
      setText("keyspace-hits", fmtInt(data.keyspace_hits));
      setText("keyspace-misses", fmtInt(data.keyspace_misses));
    } else {
      setText("ratio-keyspace", "—");
      setText("keyspace-hits", "—");
      setText("keyspace-misses", "—");
    }
  }

  function recordSample(now, app) {
    var rps = null;
    if (prev) {
      var dt = (now - prev.t) / 1000;
      var dTotal = app.total - prev.total;
      // A negative delta means the app restarted and its counters reset.
      if (dt > 0 && dTotal >= 0) rps = dTotal / dt;
    }
    prev = { t: now, total: app.total };
    samples.push({ t: now, ratio: app.ratio, rps: rps });
    while (samples.length && now - samples[0].t > WINDOW_MS) samples.shift();
    setText("req-rate", rps === null ? "—" : (rps < 10 ? rps.toFixed(1) : String(Math.round(rps))));
  }

  function markUpdated() {
    var el = $("last-updated");
    if (!el) return;
    var d = new Date();
    el.setAttribute("datetime", d.toISOString());
    el.textContent = d.toLocaleTimeString();
  }

  function showUnreachable(message) {
    setBadge($("redis-status"), message, "warning");
    // Leave a gap in the chart so stale data isn't mistaken for live data.
    var now = Date.now();
    samples.push({ t: now, ratio: null, rps: null });
    prev = null;
    drawChart();
  }

  function poll() {
    if (polling) return Promise.resolve();
    polling = true;
    return withTimeout(METRICS_URL, { cache: "no-store", headers: { Accept: "application/json" } }, FETCH_TIMEOUT_MS)
      .then(function (res) {
        if (!res.ok && res.status !== 503) throw new Error("Metrics error (HTTP " + res.status + ")");
        return res.json().then(function (data) {
          if (res.status === 503 && data) data.redis_available = false;
          return data;
        });
      })
      .then(function (data) {
        if (!data || typeof data !== "object") throw new Error("Metrics error (bad response)");
        var now = Date.now();
        renderRedis(data);
        var app = renderApp(data.app);
        recordSample(now, app);
        markUpdated();
        drawChart();
      })
      .catch(function (err) {
        showUnreachable(err && err.message && err.message.indexOf("Metrics error") === 0
          ? err.message : "Metrics endpoint unreachable");
      })
      .then(function () { polling = false; });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      if (document.hidden) return; // resumed by visibilitychange
      poll().then(schedule);
    }, POLL_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) poll().then(schedule);
  });

  /* ---------- chart ---------- */

  var canvas = $("metrics-chart");
  var ctx = canvas && canvas.getContext ? canvas.getContext("2d") : null;

  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name);
    return v && v.trim() ? v.trim() : fallback;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function drawSeries(key, toY, toX, color) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    var penDown = false;
    for (var i = 0; i < samples.length; i++) {
      var v = samples[i][key];
      if (v === null || v === undefined) { penDown = false; continue; }
      var x = toX(samples[i].t), y = toY(v);
      if (penDown) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      penDown = true;
    }
    ctx.stroke();
    // Mark the latest point so a single sample is still visible.
    var last = samples[samples.length - 1];
    if (last && last[key] !== null && last[key] !== undefined) {
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.arc(toX(last.t), toY(last[key]), 3, 0, Math.PI * 2);
      ctx.fill();
    }
  }

  function drawChart() {
    if (!ctx) return;
    var dpr = window.devicePixelRatio || 1;
    var cssW = canvas.clientWidth || 800;
    var cssH = canvas.clientHeight || 240;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);

    var textColor = cssVar("--muted", "#52606d");
    var gridColor = cssVar("--border", "#d9e2e7");
    var ratioColor = cssVar("--accent", "#0f766e");
    var rpsColor = cssVar("--chart-2", "#b45309");

    var pad = { l: 44, r: 48, t: 10, b: 24 };
    var w = Math.max(10, cssW - pad.l - pad.r);
    var h = Math.max(10, cssH - pad.t - pad.b);
    var now = Date.now();
    var start = now - WINDOW_MS;

    var maxRps = 0;
    for (var i = 0; i < samples.length; i++) {
      if (samples[i].rps !== null && samples[i].rps > maxRps) maxRps = samples[i].rps;
    }
    maxRps = niceMax(maxRps);

    function toX(t) { return pad.l + ((t - start) / WINDOW_MS) * w; }
    function yRatio(r) { return pad.t + h - r * h; }
    function yRps(v) { return pad.t + h - (v / maxRps) * h; }

    ctx.font = "12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = gridColor;
    ctx.fillStyle = textColor;

    // Horizontal grid + axis labels.
    for (var g = 0; g <= 4; g++) {
      var frac = g / 4;
      var y = Math.round(pad.t + h - frac * h) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(pad.l + w, y);
      ctx.stroke();
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      ctx.fillText(Math.round(frac * 100) + "%", pad.l - 6, y);
      ctx.textAlign = "left";
      var rv = frac * maxRps;
      ctx.fillText(rv < 10 && rv % 1 ? rv.toFixed(1) : String(Math.round(rv)), pad.l + w + 6, y);
    }

    // Time labels.
    ctx.textBaseline = "top";
    ctx.textAlign = "center";
    for (var k = 5; k >= 1; k--) {
      var tx = toX(now - k * 60000);
      ctx.fillText("\u2212" + k + " min", tx, pad.t + h + 6);
      ctx.strokeStyle = gridColor;
      ctx.beginPath();
      ctx.moveTo(Math.round(tx) + 0.5, pad.t + h);
      ctx.lineTo(Math.round(tx) + 0.5, pad.t + h + 4);
      ctx.stroke();
    }
    ctx.textAlign = "right";
    ctx.fillText("now", pad.l + w, pad.t + h + 6);

    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t - 4, w + 4, h + 8);
    ctx.clip();
    drawSeries("rps", yRps, toX, rpsColor);
    drawSeries("ratio", yRatio, toX, ratioColor);
    ctx.restore();

    if (!samples.length) {
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillStyle = textColor;
      ctx.fillText("Waiting for data…", pad.l + w / 2, pad.t + h / 2);
    }
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawChart, 100);
  });

  /* ---------- "See it work" demo ---------- */

  var demoButton = $("demo-run");
  var demoBody = $("demo-results");

  function cacheKind(value) {
    var v = (value || "").toUpperCase();
    if (v.indexOf("HIT") === 0) return "success";
    if (v.indexOf("MISS") === 0) return "warning";
    if (v.indexOf("STALE") === 0) return "info";
    return "muted";
  }

  function addRow(n, status, xcache, ms, timing) {
    var tr = document.createElement("tr");
    var cells = [String(n), status, null, ms, timing];
    for (var i = 0; i < cells.length; i++) {
      var td = document.createElement("td");
      if (i === 2) {
        var b = document.createElement("span");
        setBadge(b, xcache || "—", cacheKind(xcache));
        td.appendChild(b);
        td.setAttribute("data-x-cache", xcache || "");
      } else {
        td.textContent = cells[i];
      }
      if (i === 3) td.className = "num";
      tr.appendChild(td);
    }
    demoBody.appendChild(tr);
  }

  function median(list) {
    var s = list.slice().sort(function (a, b) { return a - b; });
    if (!s.length) return 0;
    var mid = Math.floor(s.length / 2);
    return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  }

  function runDemo() {
    if (!demoButton || !demoBody || demoButton.disabled) return;
    demoButton.disabled = true;
    demoBody.textContent = "";
    setText("demo-status", "Running…");
    var times = [];
    var n = 0;

    function step() {
      n += 1;
      if (n > 5) return Promise.resolve();
      var t0 = performance.now();
      return fetch("/properties/", { cache: "no-store", credentials: "omit" })
        .then(function (res) {
          return res.text().then(function () {
            var ms = performance.now() - t0;
            times.push(ms);
            addRow(n, String(res.status), res.headers.get("X-Cache"), ms.toFixed(1),
              res.headers.get("Server-Timing") || "—");
          });
        }, function () {
          addRow(n, "network error", "", "—", "—");
        })
        .then(step);
    }

    step().then(function () {
      setText("demo-status", times.length
        ? "Done — median " + median(times).toFixed(1) + " ms."
        : "Done — all requests failed.");
      demoButton.disabled = false;
      poll();
    });
  }

  if (demoButton) demoButton.addEventListener("click", runDemo);

  /* ---------- start ---------- */

  drawChart();
  poll().then(schedule);
})();
