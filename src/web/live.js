// Follow this page's server-sent events: replace the fragments they carry,
// append the log lines, and show whether the stream is connected.
(function () {
  var conn = document.getElementById("conn");
  var es = new EventSource(document.body.dataset.events);
  es.onopen = function () { document.body.classList.add("live"); if (conn) conn.textContent = "live"; };
  es.onerror = function () { document.body.classList.remove("live"); if (conn) conn.textContent = "reconnecting…"; };
  es.addEventListener("update", function (e) {
    var d = JSON.parse(e.data);
    for (var id in d) { var el = document.getElementById(id); if (el) el.innerHTML = d[id]; }
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
