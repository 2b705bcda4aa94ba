// odin console: progressive enhancement only. Every page works without it
// (plain links and forms; htmx, when loaded, swaps page bodies instead).
"use strict";
(function () {
  // The copy button: shown only where the Clipboard API is there.
  function revealCopyButtons(root) {
    if (!navigator.clipboard) {
      return;
    }
    root.querySelectorAll("button[data-copy]").forEach(function (btn) {
      btn.hidden = false;
    });
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest("button[data-copy]");
    if (!btn) {
      return;
    }
    var id = btn.getAttribute("data-copy");
    var input = document.getElementById(id);
    var status = document.querySelector('[data-copied="' + id + '"]');
    navigator.clipboard.writeText(input.value).then(function () {
      if (status) { status.textContent = "Copied to the clipboard."; }
    }, function () {
      input.select();
      if (status) { status.textContent = "Could not copy: the key is selected, copy it with your keyboard."; }
    });
  });

  // The usage chart: uPlot, over the server's SVG, from the figure's data.
  function drawCharts(root) {
    if (!window.uPlot) {
      return;
    }
    root.querySelectorAll("figure.chart[data-times]").forEach(function (fig) {
      if (fig.classList.contains("enhanced")) {
        return;
      }
      var xs = fig.getAttribute("data-times").split(",").map(Number);
      var ys = fig.getAttribute("data-counts").split(",").map(Number);
      var unit = fig.getAttribute("data-unit");
      var holder = document.createElement("div");
      holder.className = "uplot-holder";
      fig.appendChild(holder);
      var width = Math.max(fig.clientWidth, 280);
      new window.uPlot({
        width: width,
        height: 220,
        scales: { x: { time: true } },
        // The page states times in UTC; so does the chart.
        tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
        series: [
          {},
          {
            label: "checks per " + unit,
            stroke: "#1f5fa8",
            fill: "rgba(31, 95, 168, 0.35)",
            paths: window.uPlot.paths.bars({ size: [0.9, 40] }),
            points: { show: false }
          }
        ],
        axes: [{}, { label: "checks" }]
      }, [xs, ys], holder);
      fig.classList.add("enhanced");
    });
  }

  function enhance(root) {
    revealCopyButtons(root);
    drawCharts(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  // After htmx swaps a page body in.
  document.addEventListener("htmx:afterSettle", function () { enhance(document); });
})();
