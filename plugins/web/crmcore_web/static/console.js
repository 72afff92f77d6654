// crmcore web console: the pipeline board's drag and drop (native HTML5) and the dashboard's charts.
(function () {
  "use strict";
  function csrf() { return document.body.dataset.csrf || ""; }

  // -- pipeline board -------------------------------------------------------------------
  function placeCard(card) {
    // A card sits in the column of the stage the server says the deal is in (a refused move
    // comes back with its old stage and goes back there, showing why).
    var column = document.getElementById("stage-" + card.dataset.stage);
    if (column && card.parentElement !== column.querySelector(".cards")) {
      column.querySelector(".cards").prepend(card);
    }
  }
  document.addEventListener("dragstart", function (event) {
    var card = event.target.closest && event.target.closest(".deal");
    if (!card) return;
    event.dataTransfer.setData("text/plain", card.dataset.deal);
    event.dataTransfer.effectAllowed = "move";
  });
  document.addEventListener("dragover", function (event) {
    if (event.target.closest && event.target.closest(".column")) event.preventDefault();
  });
  document.addEventListener("drop", function (event) {
    var column = event.target.closest && event.target.closest(".column");
    if (!column) return;
    event.preventDefault();
    var id = event.dataTransfer.getData("text/plain");
    var card = document.getElementById("deal-" + id);
    if (!card || card.dataset.stage === column.dataset.stage) return;
    column.querySelector(".cards").prepend(card);
    card.classList.add("moving");
    htmx.ajax("POST", document.body.dataset.prefix + "/deals/" + id + "/move", {
      target: card, swap: "outerHTML", values: {stage: column.dataset.stage},
      headers: {"X-CSRF-Token": csrf()}
    });
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    var card = event.detail.elt && event.detail.elt.classList && event.detail.elt.classList.contains("deal")
      ? event.detail.elt : null;
    document.querySelectorAll(".deal").forEach(function (c) { if (!card || c === card) placeCard(c); });
    document.querySelectorAll(".column").forEach(function (column) {
      var count = column.querySelector(".count");
      if (count) count.textContent = column.querySelectorAll(".deal").length.toLocaleString();
    });
  });

  // -- refusals: an htmx request answered 4xx/5xx is shown, not swallowed ----------------
  // htmx swaps no error response; a refused CSRF token (403), a stale record (409) or a bad
  // value (422) would otherwise leave the page looking as if nothing happened.
  function messageOf(xhr) {
    var type = xhr.getResponseHeader("content-type") || "";
    try {
      if (type.indexOf("json") >= 0) {
        var problem = JSON.parse(xhr.responseText);
        return problem.detail || problem.title || xhr.statusText;
      }
      if (type.indexOf("html") >= 0) {
        var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var found = doc.getElementById("page-error") || doc.querySelector(".error");
        if (found) return found.textContent.trim();
      }
    } catch (e) { /* an unreadable body: the status says enough */ }
    return xhr.statusText || "the request failed";
  }
  function flash(text) {
    var box = document.getElementById("flash");
    if (!box) { window.alert(text); return; }
    box.textContent = text;
    box.hidden = false;
  }
  document.addEventListener("htmx:beforeRequest", function () {
    var box = document.getElementById("flash");
    if (box) box.hidden = true;
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    flash(xhr.status + ": " + messageOf(xhr));
    // A card dropped on another column whose move was refused goes back to its stage.
    document.querySelectorAll(".deal.moving").forEach(function (card) {
      card.classList.remove("moving");
      placeCard(card);
    });
  });
  document.addEventListener("htmx:sendError", function () {
    flash(document.body.dataset.offline || "The server did not answer.");
    document.querySelectorAll(".deal.moving").forEach(function (card) {
      card.classList.remove("moving");
      placeCard(card);
    });
  });

  // -- dashboard charts (plotly.min.js from the plotly Python package) -------------------
  function reportCharts() {
    // A report's charts (crmcore.Chart), as plotly specs the server built (views.chart_spec).
    document.querySelectorAll(".report-chart").forEach(function (element) {
      var spec = JSON.parse(element.dataset.spec);
      spec.layout.margin = {t: 40, r: 10, b: 60, l: 70};
      Plotly.newPlot(element, spec.data, spec.layout, {displaylogo: false, responsive: true});
      if (spec.data.some(function (trace) { return trace.customdata; })) drillDown(element);
    });
  }
  // Drill-down: a bar's customdata carries its drill key (views.drill_for_*); clicking the bar
  // opens the customers behind it, listed by the server through the user's visibility.
  function drillDown(element) {
    if (!document.body.dataset.prefix) return;  // the static export: no server to ask
    var chart = typeof element === "string" ? document.getElementById(element) : element;
    chart.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      var key = point && (Array.isArray(point.customdata) ? point.customdata[0] : point.customdata);
      if (typeof key === "string") window.location.href = document.body.dataset.prefix + "/customers?drill=" + encodeURIComponent(key);
    });
  }
  function charts() {
    if (window.Plotly && document.querySelector(".report-chart")) {
      reportCharts();
      document.body.dataset.charts = "ready";
    }
    var source = document.getElementById("chart-data");
    if (!source || !window.Plotly) return;
    var data = JSON.parse(source.textContent);
    var config = {displaylogo: false, responsive: true};
    var layout = {margin: {t: 10, r: 10, b: 40, l: 70}, separators: ".,", yaxis: {tickformat: ",.0f"},
                  legend: {orientation: "h"}};
    var traces = Object.keys(data.revenue.series).map(function (currency) {
      var s = data.revenue.series[currency];
      return {type: "bar", name: data.revenue.label + " (" + currency + ")", x: s.x, y: s.y,
              customdata: s.drill, hovertemplate: "%{x}: %{y:,.2f} " + currency + "<extra></extra>"};
    });
    Plotly.newPlot("chart-revenue", traces, Object.assign({}, layout, {xaxis: {type: "category"}}), config);
    Plotly.newPlot("chart-stages", [{type: "bar", name: data.stages.label, x: data.stages.x, y: data.stages.y,
      customdata: data.stages.x.map(function (x, i) { return [data.stages.drill[i], data.stages.counts[i]]; }),
      hovertemplate: "%{x}: %{y:,.2f} (%{customdata[1]:,} deals)<extra></extra>"}], layout, config);
    ["chart-revenue", "chart-stages"].forEach(drillDown);
    document.body.dataset.charts = "ready";
  }
  if (document.readyState === "complete") charts(); else window.addEventListener("load", charts);
})();
