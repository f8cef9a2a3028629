/* Live cache dashboard: polls /api/cache/metrics, fills the page (with the instances and
   their leases, the last writes and what each invalidated), draws a chart, lists this
   app's cache entries (/api/cache/keys) and runs the "See it work" demos. The Redis
   servers, the instances, the last writes and the key list are details only signed-in
   admins get (unless
   PUBLIC_DASHBOARD is set): without them (`details: false`, a 403 for the keys) those
   tables ask to sign in and the counters still update.
   No dependencies; loaded with defer. */
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
    setText("memory-hits", fmtInt(app.memory_hits));
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

  /* ---------- Redis servers (one, or every node of a cluster) ---------- */

  var nodesBody = $("nodes-body");
  var lastNodes = null;  // JSON of the rows shown, to skip rebuilding identical tables

  // Replaces a table body's rows with one muted row spanning `columns` columns.
  function placeholderRow(body, columns, text) {
    body.textContent = "";
    var tr = document.createElement("tr");
    tr.className = "placeholder-row";
    var td = document.createElement("td");
    td.colSpan = columns;
    td.className = "muted";
    td.textContent = text;
    tr.appendChild(td);
    body.appendChild(tr);
  }

  function nodesMessage(text) {
    lastNodes = null;
    placeholderRow(nodesBody, 5, text);
  }

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  var SIGN_IN = "Sign in as an admin to see the ";

  function renderNodes(data) {
    if (!nodesBody) return;
    if (data && data.details === false) {
      // Keep the page's own sign-in row; replace rows left from a signed-in poll.
      if (lastNodes !== null) nodesMessage(SIGN_IN + "Redis servers.");
      return;
    }
    var nodes = data && data.redis_available !== false && data.redis_nodes;
    if (!nodes || !nodes.length) {
      setText("nodes-summary", "");
      nodesMessage("Redis is unavailable: no server answered.");
      return;
    }
    var up = 0;
    for (var n = 0; n < nodes.length; n++) if (nodes[n].reachable) up++;
    setText("nodes-summary", "(" + (data.redis_mode === "cluster" ? "cluster, " : "") +
      up + " of " + nodes.length + " reachable)");
    var json = JSON.stringify(nodes);
    if (json === lastNodes) return;
    lastNodes = json;
    var frag = document.createDocumentFragment();
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var tr = document.createElement("tr");
      tr.setAttribute("data-node", node.address);
      tr.appendChild(cell(node.address, "key-name"));
      tr.appendChild(cell(node.role === "master" ? "Master" : "Replica"));
      var state = document.createElement("td");
      var badge = document.createElement("span");
      setBadge(badge, node.reachable ? "Up" : "Unreachable", node.reachable ? "success" : "danger");
      state.appendChild(badge);
      tr.appendChild(state);
      tr.appendChild(cell(fmtInt(node.keyspace_hits), "num"));
      tr.appendChild(cell(fmtInt(node.keyspace_misses), "num"));
      frag.appendChild(tr);
    }
    nodesBody.textContent = "";
    nodesBody.appendChild(frag);
  }

  /* ---------- instances and their leases ---------- */

  var instancesBody = $("instances-body");
  var instancesShown = false; // whether rows (or a message) replaced the page's own row

  function instancesMessage(text) {
    instancesShown = true;
    placeholderRow(instancesBody, 3, text);
  }

  // One row per instance of the lease hash: its id, the lease left (seconds, by Redis'
  // clock when the metrics were read) and the last invalidation it applied. The lease
  // changes on every poll, so the rows are rebuilt each time.
  function renderInstances(data) {
    setText("invalidation-seq", typeof data.invalidation_seq === "number" ? fmtInt(data.invalidation_seq) : "—");
    if (!instancesBody) return;
    if (data.details === false) {
      // Keep the page's own sign-in row; replace rows left from a signed-in poll.
      if (instancesShown) placeholderRow(instancesBody, 3, SIGN_IN + "instances.");
      instancesShown = false;
      return;
    }
    if (data.redis_available === false) {
      instancesMessage("Redis is unavailable: the leases cannot be read.");
      return;
    }
    var instances = data.instances;
    if (!Array.isArray(instances)) {
      instancesMessage("The leases could not be read.");
      return;
    }
    if (!instances.length) {
      instancesMessage("No instance holds a lease.");
      return;
    }
    var frag = document.createDocumentFragment();
    for (var i = 0; i < instances.length; i++) {
      var inst = instances[i] || {};
      var tr = document.createElement("tr");
      tr.setAttribute("data-instance", String(inst.id));
      tr.appendChild(cell(String(inst.id), "key-name"));
      var left = num(inst.lease_ms_left);
      tr.appendChild(cell(left > 0 ? (left / 1000).toFixed(1) + " s" : "ended", "num"));
      tr.appendChild(cell(fmtInt(inst.applied), "num"));
      frag.appendChild(tr);
    }
    instancesShown = true;
    instancesBody.textContent = "";
    instancesBody.appendChild(frag);
  }

  /* ---------- database reads and replicas ---------- */

  var replicasBody = $("replicas-body");

  function fmtBytes(n) {
    if (n < 1024) return fmtInt(n) + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  // PostgreSQL writes LSNs as two hex halves (X/Y); the JSON has the number.
  function fmtLsn(n) {
    n = num(n);
    var high = Math.floor(n / 4294967296);
    var low = n - high * 4294967296;
    return high.toString(16).toUpperCase() + "/" + low.toString(16).toUpperCase();
  }

  function renderDatabase(db) {
    if (!db || typeof db !== "object") return;
    setText("db-reads-primary", fmtInt(db.reads_primary));
    setText("db-reads-replica", fmtInt(db.reads_replica));
    if (!replicasBody || !Array.isArray(db.replicas) || !db.replicas.length) return;
    var frag = document.createDocumentFragment();
    for (var i = 0; i < db.replicas.length; i++) {
      var r = db.replicas[i] || {};
      var tr = document.createElement("tr");
      tr.appendChild(cell(String(r.name), "key-name"));
      var state = String(r.state) + (r.paused ? " (replay paused)" : "") + (r.open ? " (skipped after errors)" : "");
      tr.appendChild(cell(state));
      tr.appendChild(cell(r.state === "replica" ? fmtBytes(num(r.lag_bytes)) : "—", "num"));
      tr.appendChild(cell(fmtLsn(r.replayed), "num"));
      frag.appendChild(tr);
    }
    replicasBody.textContent = "";
    replicasBody.appendChild(frag);
  }

  /* ---------- last writes ---------- */

  var writesBody = $("writes-body");
  var writesShown = null; // the JSON last rendered, so unchanged polls touch nothing

  function fmtEntries(n) {
    return fmtInt(n) + (n === 1 ? " entry" : " entries");
  }

  // One row per write (newest first): when, each token it replaced with the stored
  // entries that made unreachable, and their total.
  function renderWrites(writes, hidden) {
    if (!writesBody) return;
    if (hidden) {
      if (writesShown !== null) placeholderRow(writesBody, 3, SIGN_IN + "last writes.");
      writesShown = null;
      return;
    }
    if (!Array.isArray(writes)) return;
    var json = JSON.stringify(writes);
    if (json === writesShown) return;
    writesShown = json;
    if (!writes.length) return; // keep the "no writes" placeholder
    var frag = document.createDocumentFragment();
    for (var i = 0; i < writes.length; i++) {
      var w = writes[i] || {};
      var tr = document.createElement("tr");
      tr.setAttribute("data-at", String(w.at || ""));

      var when = document.createElement("td");
      var time = document.createElement("time");
      var d = new Date(w.at);
      time.setAttribute("datetime", String(w.at || ""));
      time.textContent = isNaN(d.getTime()) ? String(w.at || "—") : d.toLocaleTimeString();
      when.appendChild(time);

      var tokensCell = document.createElement("td");
      var list = document.createElement("ul");
      list.className = "token-list";
      var total = 0;
      var tokens = Array.isArray(w.tokens) ? w.tokens : [];
      for (var j = 0; j < tokens.length; j++) {
        var li = document.createElement("li");
        var code = document.createElement("code");
        code.textContent = String(tokens[j].token);
        var entries = document.createElement("span");
        entries.className = "token-entries";
        entries.textContent = " " + fmtEntries(num(tokens[j].entries));
        li.setAttribute("data-token", String(tokens[j].token));
        li.appendChild(code);
        li.appendChild(entries);
        list.appendChild(li);
        total += num(tokens[j].entries);
      }
      tokensCell.appendChild(list);

      var totalCell = document.createElement("td");
      totalCell.className = "num";
      totalCell.textContent = fmtInt(total);

      tr.appendChild(when);
      tr.appendChild(tokensCell);
      tr.appendChild(totalCell);
      frag.appendChild(tr);
    }
    writesBody.textContent = "";
    writesBody.appendChild(frag);
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
        renderNodes(data);
        renderInstances(data);
        renderDatabase(data.database);
        var app = renderApp(data.app);
        renderWrites(data.app && data.app.recent_invalidations, data.details === false);
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

    // Time labels (short ones when a minute is narrower than "−5 min").
    ctx.textBaseline = "top";
    ctx.textAlign = "center";
    var unit = w / 5 < ctx.measureText("\u22125 min").width + 14 ? "m" : " min";
    for (var k = 5; k >= 1; k--) {
      var tx = toX(now - k * 60000);
      ctx.fillText("\u2212" + k + unit, tx, pad.t + h + 6);
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

  function runDemo(before) {
    before = before || "";
    if (!demoButton || !demoBody || demoButton.disabled) return Promise.resolve();
    demoButton.disabled = true;
    demoBody.textContent = "";
    setText("demo-status", before + "Fetching…");
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

    return step().then(function () {
      setText("demo-status", before + (times.length
        ? "Done — median " + median(times).toFixed(1) + " ms."
        : "Done — all requests failed."));
      demoButton.disabled = false;
      poll();
      pollKeys();
    });
  }

  if (demoButton) demoButton.addEventListener("click", function () { runDemo(); });

  /* ---------- "Edit a listing, watch which pages miss" (signed-in admins only) ---------- */

  var editButton = $("demo-edit");
  var editTable = $("edit-demo");
  var editBody = $("edit-demo-results");

  // Anonymous, uncached by the browser: exactly what a visitor's request gets.
  function xCacheOf(url) {
    return fetch(url, { cache: "no-store", credentials: "omit" })
      .then(function (res) {
        return res.text().then(function () {
          return res.headers.get("X-Cache") || ("HTTP " + res.status);
        });
      }, function () { return "network error"; });
  }

  // Each page's X-Cache, one request after the other (results in `pages` order).
  function fetchAll(pages) {
    var out = [];
    return pages.reduce(function (done, page) {
      return done.then(function () {
        return xCacheOf(page.url).then(function (x) { out.push(x); });
      });
    }, Promise.resolve()).then(function () { return out; });
  }

  // Saves `listing` through its admin edit form, values unchanged: a real committed
  // write, so the hooks replace the tokens of the pages that show it.
  function saveListing(listing) {
    var editUrl = "/admin/properties/" + encodeURIComponent(listing.id) + "/edit";
    return fetch(editUrl, { cache: "no-store", credentials: "same-origin" })
      .then(function (res) {
        if (!res.ok || res.redirected) throw new Error("the edit form is not available (signed out?)");
        return res.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var form = doc.querySelector("form[action='" + editUrl + "']");
        if (!form) throw new Error("the edit form was not found");
        var body = new URLSearchParams();
        var fields = form.querySelectorAll("input[name], textarea[name]");
        for (var i = 0; i < fields.length; i++) body.append(fields[i].name, fields[i].value);
        // Following the 303 to the admin list also uses up its "saved" message.
        return fetch(editUrl, { method: "POST", credentials: "same-origin", body: body });
      })
      .then(function (res) {
        if (!res.ok || !res.redirected) throw new Error("saving answered HTTP " + res.status);
      });
  }

  // The pages to watch: the newest listing's detail page and its API twin and the list
  // page showing it (they must miss after the edit), another listing's detail page and
  // another list page (they must stay cached).
  function pagesFor(data) {
    var results = (data && data.results) || [];
    var edited = results[0];
    if (!edited) throw new Error("there is no listing to edit");
    var pages = [
      { url: "/properties/" + edited.id + "/", shows: true },
      { url: "/api/properties/" + edited.id + "/", shows: true },
      { url: "/properties/", shows: true }
    ];
    if (results[1]) pages.splice(2, 0, { url: "/properties/" + results[1].id + "/", shows: false });
    if (num(data.num_pages) > 1) pages.push({ url: "/properties/?page=2", shows: false });
    return { edited: edited, pages: pages };
  }

  function xCacheBadge(value) {
    var badge = document.createElement("span");
    setBadge(badge, value, value === "HIT" ? "success" : (value === "MISS" ? "warning" : ""));
    return badge;
  }

  function renderEditDemo(pages, before, after) {
    editBody.textContent = "";
    for (var i = 0; i < pages.length; i++) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-url", pages[i].url);
      tr.setAttribute("data-shows", pages[i].shows ? "yes" : "no");
      var page = document.createElement("td");
      var code = document.createElement("code");
      code.textContent = pages[i].url;
      page.appendChild(code);
      var shows = document.createElement("td");
      shows.textContent = pages[i].shows ? "yes" : "no";
      var b = document.createElement("td");
      b.appendChild(xCacheBadge(before[i]));
      var a = document.createElement("td");
      a.appendChild(xCacheBadge(after[i]));
      tr.appendChild(page);
      tr.appendChild(shows);
      tr.appendChild(b);
      tr.appendChild(a);
      editBody.appendChild(tr);
    }
    editTable.hidden = false;
  }

  function runEditDemo() {
    if (!editButton || editButton.disabled || !editBody) return;
    editButton.disabled = true;
    if (demoButton) demoButton.disabled = true;
    setText("demo-status", "Choosing the pages to watch…");
    var plan, before;
    fetch("/api/properties/", { cache: "no-store", credentials: "omit" })
      .then(function (res) {
        if (!res.ok) throw new Error("listing API answered HTTP " + res.status);
        return res.json();
      })
      .then(function (data) {
        plan = pagesFor(data);
        setText("demo-status", "Fetching " + plan.pages.length + " pages twice (the second time they are cached)…");
        // The first round caches every page; the second shows them cached.
        return fetchAll(plan.pages).then(function () { return fetchAll(plan.pages); });
      })
      .then(function (xs) {
        before = xs;
        setText("demo-status", "Saving listing #" + plan.edited.id + "…");
        return saveListing(plan.edited);
      })
      .then(function () { return fetchAll(plan.pages); })
      .then(function (after) {
        renderEditDemo(plan.pages, before, after);
        var missed = after.filter(function (x) { return x !== "HIT"; }).length;
        setText("demo-status", "Saved listing #" + plan.edited.id + " (values unchanged) through the edit form. Done — " +
          missed + " of " + plan.pages.length + " pages missed afterwards; the others stayed cached.");
      })
      .catch(function (err) {
        setText("demo-status", "The edit demo stopped: " + (err && err.message ? err.message : "error") + ".");
      })
      .then(function () {
        editButton.disabled = false;
        if (demoButton) demoButton.disabled = false;
        poll();
        pollKeys();
      });
  }

  if (editButton) editButton.addEventListener("click", runEditDemo);

  /* ---------- keys table ---------- */

  var KEYS_URL = root.getAttribute("data-keys-url");
  var KEYS_POLL_MS = parseInt(root.getAttribute("data-keys-poll-ms"), 10) || 3000;
  var keysBody = $("keys-body");
  var keyRows = [];      // { ttlCell, expiresAt (ms | null) }
  var keysTimer = null;
  var keysPolling = false;

  var KIND_LABELS = {
    page: ["Page", "info"],
    query: ["Query", "success"],
    token: ["Token", "muted"],
    lock: ["Refresh lock", "warning"],
    other: ["Other", "muted"]
  };

  function fmtTtl(ms) {
    if (ms === null) return "no expiry";
    var s = Math.max(0, Math.ceil(ms / 1000));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + (s % 60 < 10 ? "0" : "") + (s % 60) + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function fmtBytes(n) {
    if (typeof n !== "number" || !isFinite(n)) return "—";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function tickTtls() {
    var now = Date.now();
    for (var i = 0; i < keyRows.length; i++) {
      var r = keyRows[i];
      if (r.expiresAt !== null) {
        var text = fmtTtl(r.expiresAt - now);
        if (r.ttlCell.textContent !== text) r.ttlCell.textContent = text;
      }
    }
  }

  function keysMessage(text) {
    keyRows = [];
    placeholderRow(keysBody, 4, text);
  }

  function renderKeys(data) {
    var keys = (data && data.keys) || [];
    var prefix = (data && data.prefix ? data.prefix + ":" : "");
    var now = Date.now();
    setText("keys-summary", "(" + keys.length + (data.truncated ? "+, first " + keys.length + " shown" : "") +
      (keys.length === 1 ? " key)" : " keys)"));
    if (!keys.length) {
      keysMessage("No keys: the cache is empty. Load a page to fill it.");
      return;
    }
    var frag = document.createDocumentFragment();
    keyRows = [];
    for (var i = 0; i < keys.length; i++) {
      var k = keys[i];
      var tr = document.createElement("tr");
      tr.setAttribute("data-key", k.key);

      var name = document.createElement("td");
      name.className = "key-name";
      if (prefix && k.key.indexOf(prefix) === 0) {
        var pre = document.createElement("span");
        pre.className = "key-prefix";
        pre.textContent = prefix;
        name.appendChild(pre);
        name.appendChild(document.createTextNode(k.key.slice(prefix.length)));
      } else {
        name.textContent = k.key;
      }

      var kind = document.createElement("td");
      var label = KIND_LABELS[k.kind] || KIND_LABELS.other;
      var badge = document.createElement("span");
      setBadge(badge, label[0], label[1]);
      kind.appendChild(badge);

      var ttl = document.createElement("td");
      ttl.className = "num";
      var ttlMs = typeof k.ttl_ms === "number" ? k.ttl_ms : null;
      ttl.textContent = fmtTtl(ttlMs);
      ttl.setAttribute("data-ttl-ms", ttlMs === null ? "" : String(ttlMs));

      var size = document.createElement("td");
      size.className = "num col-size";
      size.textContent = fmtBytes(k.bytes);

      tr.appendChild(name);
      tr.appendChild(kind);
      tr.appendChild(ttl);
      tr.appendChild(size);
      frag.appendChild(tr);
      keyRows.push({ ttlCell: ttl, expiresAt: ttlMs === null ? null : now + ttlMs });
    }
    keysBody.textContent = "";
    keysBody.appendChild(frag);
  }

  function pollKeys() {
    if (!KEYS_URL || !keysBody || keysPolling) return Promise.resolve();
    keysPolling = true;
    return withTimeout(KEYS_URL, { cache: "no-store", headers: { Accept: "application/json" } }, FETCH_TIMEOUT_MS)
      .then(function (res) {
        if (res.status === 503) {
          setText("keys-summary", "");
          keysMessage("Redis is unavailable: no keys to show.");
          return;
        }
        if (res.status === 403) {
          setText("keys-summary", "");
          keysMessage(SIGN_IN + "keys in Redis.");
          return;
        }
        if (!res.ok) throw new Error("HTTP " + res.status);
        return res.json().then(renderKeys);
      })
      .catch(function () {
        keysMessage("The key list could not be loaded.");
      })
      .then(function () { keysPolling = false; });
  }

  function scheduleKeys() {
    clearTimeout(keysTimer);
    keysTimer = setTimeout(function () {
      if (document.hidden) return; // resumed by visibilitychange
      pollKeys().then(scheduleKeys);
    }, KEYS_POLL_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && KEYS_URL) pollKeys().then(scheduleKeys);
  });

  /* ---------- start ---------- */

  drawChart();
  poll().then(schedule);
  if (keysBody && KEYS_URL) {
    pollKeys().then(scheduleKeys);
    setInterval(tickTtls, 1000);
  }
})();
