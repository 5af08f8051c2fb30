// Jetbridge dashboard: live updates from the server's event stream, and the dark-mode switch.
// Every task event (debounced) asks htmx to re-fetch the page's #live part; nothing else runs in the browser.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = localStorage.getItem("jb-theme");
  if (saved) { root.setAttribute("data-theme", saved); }
  window.jbToggleTheme = function () {
    var dark = root.getAttribute("data-theme") === "dark" ||
      (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
    var next = dark ? "light" : "dark";
    root.setAttribute("data-theme", next);
    localStorage.setItem("jb-theme", next);
  };
  window.jbSignIn = function (form) {
    var token = form.elements.token.value.trim();
    document.cookie = "jb_token=" + encodeURIComponent(token) + "; path=/; SameSite=Strict";
    window.location = "/";
    return false;
  };
  // A refresh replaces #live, and htmx drops the answer of a request whose element is gone: so no refresh
  // starts while an action (a button inside #live) waits for its answer; it runs once the action is answered.
  var busy = 0, wanted = false;
  function isLive(e) { return e.detail && e.detail.elt && e.detail.elt.id === "live"; }
  function refresh() {
    if (busy) { wanted = true; return; }
    htmx.trigger(document.body, "jb:refresh");
  }
  document.addEventListener("htmx:beforeRequest", function (e) { if (!isLive(e)) { busy++; } });
  document.addEventListener("htmx:beforeSwap", function (e) {  // a refresh that was already under way
    if (isLive(e) && busy) { e.detail.shouldSwap = false; wanted = true; }
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (isLive(e)) { return; }
    busy = Math.max(0, busy - 1);
    wanted = true;  // an action changed something: show it
    if (!busy) { wanted = false; refresh(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    var dot = document.getElementById("live-dot");
    if (!live || !live.dataset.events) { return; }
    setInterval(refresh, 15000);  // also without events: counts change for reasons no event reports
    if (!window.EventSource) { return; }
    var pending = null;
    var source = new EventSource(live.dataset.events);
    // Browsers allow six connections per server: a stream left open by a page we left would use one up.
    window.addEventListener("pagehide", function () { source.close(); });
    source.onopen = function () { if (dot) { dot.classList.add("on"); dot.title = "live"; } };
    source.onerror = function () { if (dot) { dot.classList.remove("on"); dot.title = "reconnecting"; } };
    source.addEventListener("task_state", function () {
      if (pending) { return; }
      pending = setTimeout(function () { pending = null; refresh(); }, 250);
    });
  });
})();
