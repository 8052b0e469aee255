/* pairedscreen report: sortable + filterable tables. Vanilla JS, no dependencies, no network. */
(function () {
  "use strict";

  function cellKey(row, idx) {
    var cell = row.cells[idx];
    return cell ? cell.getAttribute("data-sort") || "" : "";
  }

  function asNumber(s) {
    if (s === "" || s === null) { return NaN; }
    var n = Number(s);
    return isFinite(n) ? n : NaN;
  }

  function sortTable(table, idx, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = !th.classList.contains("sorted-asc");
    var numeric = rows.every(function (r) { var k = cellKey(r, idx); return k === "" || !isNaN(asNumber(k)); });
    rows.sort(function (a, b) {
      var ka = cellKey(a, idx), kb = cellKey(b, idx);
      if (ka === "" && kb === "") { return 0; }
      if (ka === "") { return 1; }          /* empty cells last, whatever the direction */
      if (kb === "") { return -1; }
      var c = numeric ? asNumber(ka) - asNumber(kb) : ka.localeCompare(kb, undefined, { numeric: true });
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.classList.remove("sorted-asc", "sorted-desc");
    });
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
  }

  /* "text" matches any cell; "col>x", "col<x", "col>=x", "col<=x", "col=x", "col!=x" test one column */
  function parseFilter(text, headers) {
    var terms = text.trim().toLowerCase().split(/\s+/).filter(Boolean);
    return terms.map(function (t) {
      var m = /^([^<>=!]+)(<=|>=|!=|<|>|=)(.*)$/.exec(t);
      if (m) {
        var idx = headers.indexOf(m[1]);
        if (idx >= 0) { return { col: idx, op: m[2], value: m[3] }; }
      }
      return { col: -1, op: "~", value: t };
    });
  }

  function matches(row, f) {
    if (f.col < 0) { return row.textContent.toLowerCase().indexOf(f.value) >= 0; }
    var key = cellKey(row, f.col), text = row.cells[f.col].textContent.toLowerCase();
    var a = asNumber(key), b = asNumber(f.value), num = !isNaN(a) && !isNaN(b);
    switch (f.op) {
      case "<": return num && a < b;
      case ">": return num && a > b;
      case "<=": return num && a <= b;
      case ">=": return num && a >= b;
      case "=": return num ? a === b : text === f.value;
      case "!=": return num ? a !== b : text !== f.value;
      default: return true;
    }
  }

  function applyFilter(input) {
    var table = document.getElementById("tbl-" + input.getAttribute("data-table"));
    if (!table) { return; }
    var headers = Array.prototype.map.call(table.tHead.rows[0].cells, function (h) {
      return h.getAttribute("data-col").toLowerCase();
    });
    var filters = parseFilter(input.value, headers);
    var shown = 0, rows = table.tBodies[0].rows;
    Array.prototype.forEach.call(rows, function (r) {
      var ok = filters.every(function (f) { return matches(r, f); });
      r.style.display = ok ? "" : "none";
      if (ok) { shown += 1; }
    });
    var counter = document.querySelector('.table-count[data-table="' + input.getAttribute("data-table") + '"]');
    if (counter) { counter.textContent = shown + " of " + rows.length + " rows"; }
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
        th.addEventListener("click", function () { sortTable(table, idx, th); });
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll("input.table-filter"), function (input) {
      input.addEventListener("input", function () { applyFilter(input); });
      applyFilter(input);
    });
    /* self-check for readers and tests: resources this page fetched from anywhere but itself */
    var external = 0;
    if (window.performance && performance.getEntriesByType) {
      external = performance.getEntriesByType("resource").filter(function (e) {
        return e.name.indexOf("data:") !== 0;
      }).length;
    }
    document.documentElement.setAttribute("data-external-resources", String(external));
    document.documentElement.setAttribute("data-report-ready", "true");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
