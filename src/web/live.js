// Follow this page's server-sent events: replace the fragments they carry
// (not while a button in one is under the pointer or focused: that one waits
// for the next update), append the log lines, show whether the stream is on.
(function () {
  var conn = document.getElementById("conn"), pending = {};
  var es = new EventSource(document.body.dataset.events);
  function put(id, html) {
    var el = document.getElementById(id);
    if (!el) return;
    if (el.querySelector("button:hover, button:focus")) { pending[id] = html; return; }
    delete pending[id];
    el.innerHTML = html;
  }
  // A page left for another closes its stream (the browser may keep it in
  // its back-forward cache, and plain HTTP allows six connections per host);
  // coming back to it shows it afresh.
  window.addEventListener("pagehide", function () { es.close(); });
  window.addEventListener("pageshow", function (e) { if (e.persisted) location.reload(); });
  es.onopen = function () { document.body.classList.add("live"); if (conn) conn.textContent = "live"; };
  es.onerror = function () { document.body.classList.remove("live"); if (conn) conn.textContent = "reconnecting…"; };
  es.addEventListener("update", function (e) {
    var d = JSON.parse(e.data), id;
    for (id in pending) if (!(id in d)) d[id] = pending[id];
    for (id in d) put(id, d[id]);
  });
  es.addEventListener("log", function (e) {
    var d = JSON.parse(e.data), log = document.getElementById("log");
    if (!log) return;
    var atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (d.reset) log.innerHTML = "";
    if (d.head) document.getElementById("loghead").innerHTML = d.head;
    log.insertAdjacentHTML("beforeend", d.html);
    if (atEnd || d.reset) log.scrollTop = log.scrollHeight;
  });
})();
