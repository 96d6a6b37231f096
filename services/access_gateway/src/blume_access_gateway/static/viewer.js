// The built-in viewer: a series strip, one image at a time, next/previous, the arrow keys
// and the mouse wheel, CT window presets. Every image URL is a position under the page's
// opaque handle (/view/<handle>/series/<n>/frames/<k>): the browser never sees a UID.
// A static file, because the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  // Every viewer on the page (one today), each with its own state.
  function startViewer(root) {
    var base = root.getAttribute("data-base");
    var image = root.querySelector("[data-frame]");
    var position = root.querySelector("[data-position]");
    var presets = root.querySelector("[data-presets]");
    var gone = root.querySelector("[data-gone]");
    var strip = Array.prototype.slice.call(root.querySelectorAll("[data-series]"));
    var state = { series: 0, image: 1, count: 0, window: "" };

    function frameUrl() {
      var url = base + "/series/" + state.series + "/frames/" + state.image;
      return state.window ? url + "?window=" + state.window : url;
    }

    function show() {
      if (!state.series || !state.count) {
        return;
      }
      image.src = frameUrl();
      image.setAttribute("data-series-shown", String(state.series));
      image.setAttribute("data-image-shown", String(state.image));
      position.textContent = state.image + " / " + state.count;
    }

    function choose(button) {
      strip.forEach(function (other) {
        other.setAttribute("aria-pressed", other === button ? "true" : "false");
      });
      state.series = Number(button.getAttribute("data-series"));
      state.count = Number(button.getAttribute("data-count"));
      state.image = 1;
      state.window = "";
      presets.hidden = !button.hasAttribute("data-ct");
      show();
    }

    function step(delta) {
      var next = Math.min(state.count, Math.max(1, state.image + delta));
      if (next !== state.image) {
        state.image = next;
        show();
      }
    }

    // An image that fails: ask why. 410 (the share ended) or 404 stops the viewer plainly.
    image.addEventListener("error", function () {
      fetch(image.src, { credentials: "same-origin" }).then(function (answer) {
        if (answer.status === 410 || answer.status === 404) {
          gone.hidden = false;
          image.hidden = true;
        }
      });
    });
    strip.forEach(function (button) {
      button.addEventListener("click", function () {
        choose(button);
      });
    });
    Array.prototype.forEach.call(root.querySelectorAll("[data-window]"), function (button) {
      button.addEventListener("click", function () {
        state.window = button.getAttribute("data-window");
        show();
      });
    });
    root.querySelector("[data-previous]").addEventListener("click", function () {
      step(-1);
    });
    root.querySelector("[data-next]").addEventListener("click", function () {
      step(1);
    });
    document.addEventListener("keydown", function (event) {
      var moves = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
      if (event.key === "Home" || event.key === "End") {
        step(event.key === "Home" ? -state.count : state.count);
        event.preventDefault();
      } else if (Object.prototype.hasOwnProperty.call(moves, event.key)) {
        step(moves[event.key]);
        event.preventDefault();
      }
    });
    image.addEventListener("wheel", function (event) {
      event.preventDefault();
      step(event.deltaY > 0 ? 1 : -1);
    }, { passive: false });
    if (strip.length) {
      choose(strip[0]);
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-viewer]"), startViewer);
})();
