// The analytics screen's charts: stage durations (p50, p90 against the SLA) and orders per
// day, drawn from the JSON the page carries.
(function () {
  "use strict";
  var charts = [];
  var axis = { color: "#6b7785" };
  var split = { lineStyle: { color: "#eef2f6" } };
  function draw() {
    var source = document.getElementById("analytics-data");
    if (!source || !window.echarts) return;
    var data = JSON.parse(source.textContent);
    var stages = document.getElementById("chart-stages");
    var daily = document.getElementById("chart-daily");
    if (stages) {
      var a = window.echarts.init(stages);
      a.setOption({
        animation: false,
        grid: { left: 44, right: 12, top: 28, bottom: 70 },
        tooltip: { trigger: "axis" },
        legend: { top: 0, textStyle: axis },
        xAxis: { type: "category", data: data.stages, axisLabel: { color: "#6b7785", rotate: 20, fontSize: 11 } },
        yAxis: { type: "value", axisLabel: axis, splitLine: split },
        series: [
          { name: data.labels.p50, type: "bar", data: data.p50, itemStyle: { color: "#2f8cff" }, barMaxWidth: 18 },
          { name: data.labels.p90, type: "bar", data: data.p90, itemStyle: { color: "#12b886" }, barMaxWidth: 18 },
          { name: data.labels.sla, type: "line", data: data.sla, itemStyle: { color: "#f08c00" }, symbol: "diamond" }
        ]
      });
      charts.push(a);
    }
    if (daily) {
      var b = window.echarts.init(daily);
      b.setOption({
        animation: false,
        grid: { left: 44, right: 12, top: 16, bottom: 28 },
        tooltip: { trigger: "axis" },
        xAxis: { type: "category", data: data.days, axisLabel: axis },
        yAxis: { type: "value", minInterval: 1, axisLabel: axis, splitLine: split },
        series: [{ name: data.orders_label, type: "bar", data: data.orders,
                   itemStyle: { color: "#2f8cff", borderRadius: [3, 3, 0, 0] }, barMaxWidth: 22 }]
      });
      charts.push(b);
    }
  }
  document.addEventListener("DOMContentLoaded", draw);
  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
})();
