/* Study dashboard: draws the charts from the #dashboard-data JSON (json_script) with Plotly, and keeps
 * the page live — on a "judgment" or "model_version" event from /ws/studies/<id>/ it re-fetches the
 * sections partial through htmx (at most once every REFRESH_MS). Tables carry the same numbers, so the
 * page reads fine without JavaScript.
 */
(function () {
  "use strict";

  var REFRESH_MS = 3000;
  var PALETTE = ["#3a4fd6", "#e8743b", "#19a979", "#945ecf", "#d64550", "#13a4b4", "#bf8b00", "#6c8893",
    "#ee6868", "#2f6497", "#5dbf5d", "#c44ea0", "#8a6d3b", "#4aa3df", "#a3a300", "#7f7f7f"];
  var ALL_COLOUR = "#59626e";
  var FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif", size: 12, color: "#1c2128" };
  var CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"] };

  document.documentElement.classList.add("js");

  function readData() {
    var el = document.getElementById("dashboard-data");
    if (!el) return null;
    try { return JSON.parse(el.textContent); } catch (e) { return null; }
  }

  function colourMap(data) {
    var map = {};
    data.groups.forEach(function (g, i) { map[g.name] = PALETTE[i % PALETTE.length]; });
    return map;
  }

  function layout(extra) {
    var base = {
      font: FONT, margin: { l: 56, r: 16, t: 28, b: 48 }, paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff", legend: { orientation: "h", y: -0.18 }, hoverlabel: { font: FONT },
    };
    return Object.assign(base, extra || {});
  }

  function draw(id, traces, lay) {
    var el = document.getElementById(id);
    if (!el || !window.Plotly) return;
    if (!el._fullLayout) el.innerHTML = ""; // a history snapshot holds stale, lifeless SVG
    window.Plotly.react(el, traces, layout(lay), CONFIG);
  }

  function pct(x) { return x === null || x === undefined ? null : 100 * x; }

  function matrixZ(names, matrix) {
    return names.map(function (a) {
      return names.map(function (b) { var row = matrix[a] || {}; return row[b] === undefined ? null : row[b]; });
    });
  }

  function heatmap(id, names, matrix, opts) {
    if (!names.length) return;
    draw(id, [{
      type: "heatmap", x: names, y: names, z: matrixZ(names, matrix), zmin: opts.zmin, zmax: opts.zmax,
      colorscale: opts.colorscale, reversescale: !!opts.reversescale, texttemplate: opts.text,
      hovertemplate: opts.hover + "<extra></extra>", colorbar: { thickness: 12, title: { text: opts.bar } },
      xgap: 2, ygap: 2,
    }], {
      margin: { l: 110, r: 16, t: 16, b: 90 },
      xaxis: { title: { text: opts.xtitle || "" }, type: "category", tickangle: -30 },
      yaxis: { title: { text: opts.ytitle || "" }, type: "category", autorange: "reversed" },
    });
  }

  function render() {
    var data = readData();
    if (!data || !window.Plotly) return;
    var colours = colourMap(data);
    var names = data.groups.map(function (g) { return g.name; });
    var select = document.getElementById("group-by");
    if (select && select.value !== data.group_by) select.value = data.group_by;

    // Progress: annotators and judgments per group, side by side.
    var groupColours = names.map(function (n) { return colours[n]; });
    draw("chart-progress", [
      { type: "bar", orientation: "h", y: names, x: data.groups.map(function (g) { return g.annotators; }),
        marker: { color: groupColours }, name: "Annotators", xaxis: "x", yaxis: "y",
        hovertemplate: "%{y}: %{x} annotators<extra></extra>" },
      { type: "bar", orientation: "h", y: names, x: data.groups.map(function (g) { return g.judgments; }),
        marker: { color: groupColours }, name: "Judgments", xaxis: "x2", yaxis: "y2",
        hovertemplate: "%{y}: %{x} judgments<extra></extra>" },
    ], {
      grid: { rows: 1, columns: 2, pattern: "independent" }, showlegend: false,
      margin: { l: 110, r: 16, t: 30, b: 36 },
      yaxis: { type: "category", autorange: "reversed" }, yaxis2: { type: "category", autorange: "reversed", showticklabels: false },
      annotations: [
        { text: "Annotators per group", xref: "x domain", yref: "paper", x: 0, y: 1.08, showarrow: false, xanchor: "left" },
        { text: "Judgments per group", xref: "x2 domain", yref: "paper", x: 0, y: 1.08, showarrow: false, xanchor: "left" },
      ],
    });

    // Leaderboard: score and 95% interval of each model, one series per group.
    var models = data.overall.leaderboard.map(function (r) { return r.model; });
    if (models.length) {
      var series = [{ name: "All annotators", board: data.overall.leaderboard, colour: ALL_COLOUR }].concat(
        data.groups.map(function (g) { return { name: g.name, board: g.leaderboard, colour: colours[g.name] }; }));
      var traces = series.map(function (s) {
        var byModel = {};
        s.board.forEach(function (r) { byModel[r.model] = r; });
        var rows = models.map(function (m) { return byModel[m] || null; });
        return {
          type: "scatter", mode: "markers", name: s.name, x: models, offsetgroup: s.name,
          y: rows.map(function (r) { return r ? r.score : null; }),
          error_y: { type: "data", symmetric: false, thickness: 1.5, width: 4,
            array: rows.map(function (r) { return r && r.ci_high !== null ? r.ci_high - r.score : null; }),
            arrayminus: rows.map(function (r) { return r && r.ci_low !== null ? r.score - r.ci_low : null; }) },
          marker: { color: s.colour, size: 9, symbol: s.name === "All annotators" ? "diamond" : "circle" },
          customdata: rows.map(function (r) { return r ? [r.ci_low, r.ci_high, r.rank, r.battles] : [null, null, null, 0]; }),
          hovertemplate: "<b>%{x}</b> · " + s.name + "<br>score %{y:.0f} [%{customdata[0]:.0f}, %{customdata[1]:.0f}]" +
            "<br>rank %{customdata[2]} · %{customdata[3]} battles<extra></extra>",
        };
      });
      var lo = 1000, hi = 1000;
      series.forEach(function (s) {
        s.board.forEach(function (r) {
          lo = Math.min(lo, r.ci_low === null ? r.score : r.ci_low);
          hi = Math.max(hi, r.ci_high === null ? r.score : r.ci_high);
        });
      });
      var pad = Math.max(25, 0.08 * (hi - lo));
      draw("chart-leaderboard", traces, {
        scattermode: "group", scattergap: 0.5,
        yaxis: { title: { text: "Bradley–Terry score (Elo scale)" }, zeroline: false, range: [lo - pad, hi + pad] },
        xaxis: { type: "category" }, shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 1000, y1: 1000,
          line: { color: "#b7bec8", dash: "dot", width: 1 } }],
      });
      heatmap("chart-rank", names, data.rank_correlation, {
        zmin: -1, zmax: 1, colorscale: "RdBu", text: "%{z:.2f}", bar: "ρ",
        hover: "%{y} vs %{x}: ρ = %{z:.2f}",
      });
    }

    // Agreement within groups (pairwise share and alpha), and between groups.
    var agreeGroups = ["All annotators"].concat(names);
    var agreements = [data.overall.agreement].concat(data.groups.map(function (g) { return g.agreement; }));
    draw("chart-agreement", [
      { type: "bar", name: "Pairwise agreement", x: agreeGroups, y: agreements.map(function (a) { return a.pairwise; }),
        marker: { color: "#3a4fd6" }, hovertemplate: "%{x}: %{y:.1%}<extra>pairwise</extra>" },
      { type: "bar", name: "Krippendorff's α", x: agreeGroups, y: agreements.map(function (a) { return a.alpha; }),
        marker: { color: "#e8743b" }, hovertemplate: "%{x}: α = %{y:.2f}<extra></extra>" },
    ], { barmode: "group", yaxis: { range: [Math.min(0, minOf(agreements, "alpha")), 1], title: { text: "agreement" } },
      xaxis: { type: "category" } });
    heatmap("chart-between", names, data.between_group_agreement, {
      zmin: 0, zmax: 1, colorscale: "Blues", text: "%{z:.0%}", bar: "agree",
      hover: "%{y} × %{x}: %{z:.1%}",
    });

    // Reward model: held-out accuracy per group, personalized vs population; cross-group matrix.
    if (data.model_version) {
      var accGroups = ["All annotators"].concat(names);
      var accs = [data.overall.reward_accuracy].concat(data.groups.map(function (g) { return g.reward_accuracy; }));
      draw("chart-accuracy", [
        { type: "bar", name: "Personalized", x: accGroups, y: accs.map(function (a) { return pct(a.personalized); }),
          marker: { color: "#19a979" }, customdata: accs.map(function (a) { return a.n_heldout; }),
          hovertemplate: "%{x}: %{y:.1f}% (n=%{customdata})<extra>personalized</extra>" },
        { type: "bar", name: "Population", x: accGroups, y: accs.map(function (a) { return pct(a.population); }),
          marker: { color: "#b7bec8" }, customdata: accs.map(function (a) { return a.n_heldout; }),
          hovertemplate: "%{x}: %{y:.1f}% (n=%{customdata})<extra>population</extra>" },
      ], { barmode: "group", yaxis: { range: [0, 100], title: { text: "held-out accuracy (%)" } }, xaxis: { type: "category" },
        shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 50, y1: 50, line: { color: "#d64550", dash: "dot", width: 1 } }] });
      var cross = data.cross_group_accuracy || {};
      if (cross.groups && cross.groups.length) {
        heatmap("chart-cross", cross.groups, cross.matrix, {
          zmin: 0, zmax: 1, colorscale: "Viridis", text: "%{z:.0%}", bar: "acc",
          hover: "model of %{y} on judgments of %{x}: %{z:.1%}", xtitle: "judgments of", ytitle: "model of",
        });
      }
    }

    // Latent map: one trace per group so the legend names the colours.
    if (data.latent_map.length) {
      var byGroup = {};
      data.latent_map.forEach(function (p) { (byGroup[p.group] = byGroup[p.group] || []).push(p); });
      draw("chart-latent", Object.keys(byGroup).sort().map(function (g) {
        var pts = byGroup[g];
        return { type: "scatter", mode: "markers", name: g, x: pts.map(function (p) { return p.x; }),
          y: pts.map(function (p) { return p.y; }), text: pts.map(function (p) { return p.annotator; }),
          marker: { color: colours[g] || ALL_COLOUR, size: 11, opacity: 0.85, line: { color: "#fff", width: 1 } },
          hovertemplate: "%{text}<br>" + g + "<extra></extra>" };
      }), { xaxis: { title: { text: "component 1" }, zeroline: false }, yaxis: { title: { text: "component 2" }, zeroline: false },
        legend: { orientation: "v", x: 1.02, y: 1 }, margin: { l: 56, r: 140, t: 16, b: 48 } });
    }

    // Stated vs revealed: correlation per attribute, overall and per group.
    var attrs = (data.stated_vs_revealed.attributes || []).filter(function (a) { return a.n > 0; });
    if (attrs.length) {
      var labels = attrs.map(function (a) { return a.attribute; });
      var svGroups = {};
      attrs.forEach(function (a) { Object.keys(a.by_group).forEach(function (g) { svGroups[g] = true; }); });
      var svTraces = [{ type: "bar", name: "All annotators", x: labels, marker: { color: ALL_COLOUR },
        y: attrs.map(function (a) { return a.correlation; }), customdata: attrs.map(function (a) { return a.n; }),
        hovertemplate: "%{x}: r = %{y:.2f} (n=%{customdata})<extra>all</extra>" }];
      Object.keys(svGroups).sort().forEach(function (g) {
        svTraces.push({ type: "bar", name: g, x: labels, marker: { color: colours[g] || ALL_COLOUR },
          y: attrs.map(function (a) { return a.by_group[g] ? a.by_group[g].correlation : null; }),
          customdata: attrs.map(function (a) { return a.by_group[g] ? a.by_group[g].n : 0; }),
          hovertemplate: "%{x}: r = %{y:.2f} (n=%{customdata})<extra>" + g + "</extra>" });
      });
      draw("chart-stated", svTraces, { barmode: "group", yaxis: { range: [-1, 1], title: { text: "correlation" } },
        xaxis: { type: "category" } });
    }
  }

  function minOf(rows, key) {
    var m = 0;
    rows.forEach(function (r) { if (r[key] !== null && r[key] < m) m = r[key]; });
    return m;
  }

  // ---- live updates --------------------------------------------------------------------------------
  var lastRefresh = 0;
  var pending = null;

  function sectionsUrl() {
    var form = document.getElementById("group-form");
    var select = document.getElementById("group-by");
    return form.getAttribute("action") + "?group_by=" + encodeURIComponent(select ? select.value : "");
  }

  function refresh() {
    pending = null;
    lastRefresh = Date.now();
    if (!window.htmx || !document.getElementById("dashboard-sections")) return;
    window.htmx.ajax("GET", sectionsUrl(), { target: "#dashboard-sections", swap: "outerHTML" });
  }

  function scheduleRefresh() {
    if (pending) return;
    pending = setTimeout(refresh, Math.max(0, lastRefresh + REFRESH_MS - Date.now()));
  }

  function setStatus(state, text) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  function connect(path, attempt) {
    if (!("WebSocket" in window)) return;
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket;
    try { socket = new WebSocket(scheme + "//" + window.location.host + path); } catch (e) { return; }
    var opened = false;
    socket.addEventListener("open", function () { opened = true; attempt = 0; setStatus("live", "Live"); });
    socket.addEventListener("message", function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.event === "judgment" || msg.event === "model_version") scheduleRefresh();
    });
    socket.addEventListener("close", function (event) {
      setStatus("off", "Not live");
      if (event.code === 4403) return; // not allowed: do not retry
      var delay = Math.min(30000, 1000 * Math.pow(2, opened ? 0 : attempt));
      setTimeout(function () { connect(path, attempt + 1); }, delay);
    });
  }

  function start() {
    render();
    // The sections were swapped (grouping changed, or a live refresh): draw the new numbers.
    document.body.addEventListener("htmx:afterSettle", render);
    document.body.addEventListener("htmx:historyRestore", render);
    window.addEventListener("resize", function () {
      document.querySelectorAll(".chart .js-plotly-plot, .chart.js-plotly-plot").forEach(function (el) {
        window.Plotly.Plots.resize(el);
      });
    });
    var form = document.getElementById("group-form");
    if (form && form.dataset.wsPath) connect(form.dataset.wsPath, 0);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
