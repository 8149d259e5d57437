// The dashboard's chart: drawn from the JSON the figures block carries, redrawn after each
// htmx refresh of that block.
(function () {
  "use strict";
  var chart = null;
  function draw() {
    var holder = document.getElementById("chart-throughput");
    var source = document.getElementById("chart-data");
    if (!holder || !source || !window.echarts) return;
    var data = JSON.parse(source.textContent);
    if (chart) chart.dispose();
    chart = window.echarts.init(holder);
    chart.setOption({
      animation: false,
      grid: { left: 36, right: 12, top: 16, bottom: 28 },
      tooltip: { trigger: "axis" },
      xAxis: { type: "category", data: data.minutes, axisLabel: { interval: 9, color: "#6b7785" },
               axisLine: { lineStyle: { color: "#c5d0dc" } } },
      yAxis: { type: "value", minInterval: 1, splitLine: { lineStyle: { color: "#eef2f6" } },
               axisLabel: { color: "#6b7785" } },
      series: [{ type: "bar", data: data.counts, itemStyle: { color: "#2f8cff", borderRadius: [3, 3, 0, 0] },
                 barMaxWidth: 14 }]
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "figures") draw();
  });
  window.addEventListener("resize", function () { if (chart) chart.resize(); });
})();
