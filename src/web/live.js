// Follow this page's server-sent events: replace the fragments they carry
// (not while a button in one is under the pointer or focused: that one waits
// for the next update), append the log lines, show whether the stream is on,
// and count up the times of what runs ([data-since]: the server's epoch ms).
(function () {
  var conn = document.getElementById("conn"), pending = {};
  var skew = (+document.body.dataset.now || Date.now()) - Date.now();
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmt(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
  }
  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("[data-since]").forEach(function (e) {
      e.textContent = fmt((now - +e.dataset.since) / 1000);
    });
  }
  tick();
  setInterval(tick, 1000);
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
  // The label says "live" (in green) only while the stream is on and a run
  // goes on ([data-run-live="1"], sent with the page's fragments).
  var open = false;
  function label() {
    if (!conn) return;
    var running = !!document.querySelector('[data-run-live="1"]');
    conn.textContent = !open ? "reconnecting…" : running ? "live" : "up to date · no run going";
    conn.classList.toggle("on", open && running);
  }
  es.onopen = function () { open = true; document.body.classList.add("live"); label(); };
  es.onerror = function () { open = false; document.body.classList.remove("live"); label(); };
  es.addEventListener("update", function (e) {
    var d = JSON.parse(e.data), id;
    for (id in pending) if (!(id in d)) d[id] = pending[id];
    for (id in d) put(id, d[id]);
    tick();
    label();
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
