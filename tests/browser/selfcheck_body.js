// Injected last into the copy of report.html the browser test loads: after layout, measures every chart (data
// marks with a non-empty box on screen, axis labels, legend entries) and each section's recorded state, and writes
// the result as JSON into <pre id="taxon-selfcheck">, which `chromium --dump-dom` prints.
(function () {
  var out = { errors: window.__taxonErrors || ["selfcheck_head.js did not run"], charts: [], sections: {}, height: 0 };
  document.querySelectorAll("figure.chart").forEach(function (f) {
    var svg = f.querySelector("svg");
    var box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
    var visible = 0;
    if (svg) svg.querySelectorAll(".mark").forEach(function (m) {
      var b = m.getBBox(), r = m.getBoundingClientRect();
      if ((b.width > 0 || b.height > 0) && (r.width > 0 || r.height > 0)) visible++;
    });
    out.charts.push({
      id: f.id,
      expected: Number(f.getAttribute("data-marks")),
      visible: visible,
      width: Math.round(box.width),
      height: Math.round(box.height),
      axis_labels: svg ? svg.querySelectorAll(".axis-label").length : 0,
      legend: svg ? svg.querySelectorAll(".legend text").length : 0
    });
  });
  document.querySelectorAll("section").forEach(function (s) { out.sections[s.id] = s.getAttribute("data-recorded"); });
  out.height = document.documentElement.scrollHeight;
  var pre = document.createElement("pre");
  pre.id = "taxon-selfcheck";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
