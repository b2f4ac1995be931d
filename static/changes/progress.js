// Live progress of a bulk change: polls the change's progress URL while items are open and
// updates the counts, the bar and the shown rows. No library; served from the portal itself.
(function () {
  "use strict";
  var root = document.getElementById("change-progress");
  if (!root) return;
  var url = root.getAttribute("data-progress-url");
  var bar = document.getElementById("change-bar");
  var statusEl = document.getElementById("change-status");
  var doneText = document.getElementById("change-done-text");
  var rows = Array.prototype.slice.call(document.querySelectorAll("#change-items tr[data-item]"));
  var ids = rows.map(function (r) { return r.getAttribute("data-item"); }).join(",");
  var initial = root.getAttribute("data-status");
  var OPEN = { pending: 1, queued: 1, running: 1 };

  function render(data) {
    var done = data.total - data.open;
    bar.max = data.total;
    bar.value = done;
    doneText.textContent = done + " of " + data.total + " zones settled";
    statusEl.textContent = data.status_label;
    var list = document.getElementById("change-counts");
    list.textContent = "";
    data.count_rows.forEach(function (row) {
      var li = document.createElement("li");
      li.setAttribute("data-status", row[0]);
      var link = document.createElement("a");
      link.href = "?status=" + encodeURIComponent(row[0]);
      link.textContent = row[1];
      li.appendChild(link);
      li.appendChild(document.createTextNode(": " + row[2]));
      list.appendChild(li);
    });
    data.items.forEach(function (item) {
      var row = document.querySelector('#change-items tr[data-item="' + item.id + '"]');
      if (!row) return;
      var cell = row.querySelector(".item-status");
      cell.textContent = item.label;
      cell.setAttribute("data-status", item.status);
      if (item.reason && !OPEN[item.status]) row.querySelector(".item-reason").textContent = item.reason;
    });
    return data;
  }

  function poll() {
    fetch(url + "?items=" + ids, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(render)
      .then(function (data) {
        if (data.status !== initial && (data.status === "previewed" || data.status === "finished")) {
          window.location.reload(); // the buttons (Run / Resume) follow the new status
          return;
        }
        if (data.open > 0 || data.status === "previewing" || data.status === "running") setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  poll();
})();
