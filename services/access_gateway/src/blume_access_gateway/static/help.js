// F1 opens the help article for this page in a new window (the page names its topic in
// <body data-help-topic>). A static file, because the Content-Security-Policy allows no
// inline script. The visible Help link does the same for people without a keyboard.
(function () {
  "use strict";
  function helpUrl() {
    var topic = document.body.getAttribute("data-help-topic") || "index";
    return "/help/" + encodeURIComponent(topic);
  }
  document.addEventListener("keydown", function (event) {
    if (event.key !== "F1") {
      return;
    }
    event.preventDefault(); // not the browser's own help
    window.open(helpUrl(), "blume-help", "noopener");
  });
})();
