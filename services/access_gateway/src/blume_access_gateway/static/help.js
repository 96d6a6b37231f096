// F1 opens the help article for this page in a new window: the page's visible Help link,
// which names the page's topic (<body data-help-topic>) and its language (?lang=), so the
// article is in the page's language whatever the browser prefers. A static file, because
// the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  function helpUrl() {
    var link = document.querySelector("[data-help-link]");
    if (link) {
      return link.getAttribute("href");
    }
    var topic = document.body.getAttribute("data-help-topic") || "index";
    var language = document.documentElement.getAttribute("lang") || "";
    return "/help/" + encodeURIComponent(topic) + "?lang=" + encodeURIComponent(language);
  }
  document.addEventListener("keydown", function (event) {
    if (event.key !== "F1") {
      return;
    }
    event.preventDefault(); // not the browser's own help
    window.open(helpUrl(), "blume-help", "noopener");
  });
})();
