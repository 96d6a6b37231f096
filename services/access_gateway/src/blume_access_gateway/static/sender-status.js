// The sender's status view refreshes its timeline every second (the issue asks for at most
// 2 s): a static file, because the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var timeline = document.getElementById("timeline");
  if (!timeline) {
    return;
  }
  var url = timeline.getAttribute("data-refresh");
  function refresh() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html !== null && html.trim() !== timeline.innerHTML.trim()) {
          timeline.innerHTML = html;
        }
      })
      .catch(function () {
        /* the next round tries again */
      });
  }
  window.setInterval(refresh, 1000);
})();
