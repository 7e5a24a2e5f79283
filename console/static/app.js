// automation-console: live refresh of the page's content (without a full
// reload, paused while the reader is in a form or has details open), and a
// confirmation before each action.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
  var main = document.getElementById("live");
  if (!main) { return; }
  var seconds = parseInt(main.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) { return; }
  function busy() {
    var active = document.activeElement;
    if (active && active !== document.body && main.contains(active) && /INPUT|SELECT|TEXTAREA|BUTTON/.test(active.tagName)) {
      return true;
    }
    return main.querySelector("details[open]") !== null || document.hidden;
  }
  function refresh() {
    if (busy()) { return; }
    fetch(window.location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null && !busy()) {
          main.innerHTML = html;
          main.setAttribute("data-refreshed", new Date().toISOString());
        }
      })
      .catch(function () { /* the next refresh tries again */ });
  }
  window.setInterval(refresh, seconds * 1000);
}());
