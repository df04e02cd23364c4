// Injected first into the copy of report.html the browser test loads: records every error the page raises
// (script errors, resources that fail to load, console.error / console.warn) for selfcheck_body.js to report.
window.__taxonErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__taxonErrors.push(e.message ? String(e.message) : "failed to load " + ((t && (t.src || t.href)) || "a resource"));
}, true);
["error", "warn"].forEach(function (level) {
  var original = console[level];
  console[level] = function () {
    window.__taxonErrors.push(level + ": " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
});
