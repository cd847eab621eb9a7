/* jobtrack dashboard and report: local times, and (on the dashboard) live updates by short polling.
   jobtrack's own code; nothing is fetched but the dashboard's own /api URLs. */
(function () {
  "use strict";
  var INTERVAL_MS = 300;

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        /* the browser's own zone; ISO-like order (sv-SE), so a table of times lines up */
        t.textContent = d.toLocaleString("sv-SE", {year: "numeric", month: "2-digit", day: "2-digit",
                                                   hour: "2-digit", minute: "2-digit", second: "2-digit"});
      }
    });
  }

  var body = document.body;
  var meta = document.querySelector('meta[name="jobtrack-token"]');
  var token = meta ? meta.getAttribute("content") : null;
  localTimes(document);
  if (!token) { return; }  /* the report: a file, nothing to follow */

  function get(url) {
    return fetch(url, {headers: {"X-Jobtrack-Token": token}, credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); });
  }
  function later(fn, ms) { window.setTimeout(fn, ms || INTERVAL_MS); }

  if (body.dataset.page === "jobs") {
    var tickJobs = function () {
      var rows = Array.prototype.slice.call(document.querySelectorAll('tr[data-job][data-terminal="0"]'));
      if (!rows.length) { later(tickJobs, 2000); return; }
      var query = rows.map(function (r) { return "ids=" + encodeURIComponent(r.dataset.job); }).join("&");
      get("/api/jobs/live?" + query).then(function (data) {
        data.rows.forEach(function (row) {
          var tr = rows.filter(function (r) { return r.dataset.job === row.id; })[0];
          if (!tr) { return; }
          var box = tr.querySelector("input[type=checkbox]");
          var checked = box ? box.checked : false;
          tr.innerHTML = row.cells;
          tr.dataset.terminal = row.terminal ? "1" : "0";
          box = tr.querySelector("input[type=checkbox]");
          if (box) { box.checked = checked; }
          localTimes(tr);
        });
        later(tickJobs);
      }).catch(function () { later(tickJobs, 2000); });
    };
    later(tickJobs);
  }

  if (body.dataset.page === "job") {
    var jobId = body.dataset.job;
    var seq = Number(body.dataset.seq);
    var logPos = Number(body.dataset.log);
    var logEl = document.getElementById("log");
    var tickJob = function () {
      get("/api/jobs/" + encodeURIComponent(jobId) + "/live?seq=" + seq + "&log=" + logPos).then(function (d) {
        if (d.charts !== null) { document.getElementById("charts").innerHTML = d.charts; }
        seq = d.seq;
        if (d.log && logEl) {
          var atEnd = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
          logEl.textContent += d.log;
          if (atEnd) { logEl.scrollTop = logEl.scrollHeight; }
        }
        logPos = d.log_pos;
        document.getElementById("status-badge").innerHTML = d.badge;
        document.getElementById("fields").outerHTML = d.fields;
        document.getElementById("timeline").outerHTML = d.timeline;
        localTimes(document);
        if (d.terminal) {
          var form = document.getElementById("cancel-form");
          if (form) { form.remove(); }
          var note = document.getElementById("log-note");
          if (note) { note.textContent = "The job has ended."; }
          body.dataset.terminal = "1";
          return;
        }
        later(tickJob);
      }).catch(function () { later(tickJob, 1500); });  /* a replaced or busy file: try again */
    };
    if (body.dataset.terminal !== "1") { later(tickJob); }
  }
})();
