/* Chorus compare page: keyboard shortcuts, strength slider, response timing, htmx glue.
 *
 * Keys: 1 = left/“Response 1”, 2 = right/“Response 2”, 0 = tie, b = both bad, ←/→ = strength −/+10.
 * Keys never fire while typing in a text field. The page works without this script
 * (plain form POST → redirect → GET); this only adds speed and timing.
 */
(function () {
  "use strict";

  var STEP = 10;
  // When each rendered judgment form appeared, for time_ms (render → submit).
  var renderedAt = new WeakMap();

  function currentForm() {
    return document.querySelector("#comparison form.judge-form");
  }

  function isTyping(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || target.isContentEditable) return true;
    if (tag === "input") {
      var type = (target.type || "text").toLowerCase();
      return ["range", "checkbox", "radio", "button", "submit", "hidden"].indexOf(type) === -1;
    }
    return false;
  }

  function syncOutput(slider) {
    var out = document.getElementById(slider.dataset.output);
    if (out) out.textContent = slider.value;
  }

  function init(root) {
    var form = (root && root.querySelector && root.querySelector("form.judge-form")) || currentForm();
    if (!form || renderedAt.has(form)) return;
    renderedAt.set(form, performance.now());
    form.dataset.ready = "true"; // shortcuts are live (tests wait for this too)
    var slider = form.querySelector("[data-strength]");
    if (slider) {
      slider.addEventListener("input", function () { syncOutput(slider); });
      syncOutput(slider);
    }
  }

  function adjustStrength(delta) {
    var form = currentForm();
    var slider = form && form.querySelector("[data-strength]");
    if (!slider) return;
    // 50 → 60 … 100 and 50 → 40 … 10 → 1 (the scale starts at 1).
    slider.value = String(Math.min(100, Math.max(1, Number(slider.value) + delta)));
    syncOutput(slider);
  }

  function choose(key) {
    var form = currentForm();
    if (!form) return;
    var button = form.querySelector('button[data-key="' + key + '"]');
    // click(), not requestSubmit(): htmx records the clicked button so its name/value is sent.
    if (button && !button.disabled) button.click();
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    var form = currentForm();
    // A freshly swapped form is wired up by htmx only when it settles (~20 ms later); a key pressed
    // in between would submit it as a plain POST (a full reload), so wait until init() has seen it.
    if (isTyping(event.target) || !form || !renderedAt.has(form)) return;
    switch (event.key) {
      case "1": choose("1"); break;
      case "2": choose("2"); break;
      case "0": choose("0"); break;
      case "b": case "B": choose("b"); break;
      case "ArrowLeft": adjustStrength(-STEP); break;
      case "ArrowRight": adjustStrength(STEP); break;
      default: return;
    }
    event.preventDefault();
  });

  // Capture phase on document runs before htmx's own submit handler on the form reads the values.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("judge-form")) return;
    var input = form.querySelector("[data-time-ms]");
    var start = renderedAt.get(form);
    if (input && start !== undefined) input.value = String(Math.round(performance.now() - start));
  }, true);

  // A 400 carries the re-rendered pair with its error message: swap it in like a success.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 400 && event.detail.target && event.detail.target.id === "comparison") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:load", function (event) { init(event.detail.elt); });

  // After a swap, move focus to the new pair's heading so screen readers announce it.
  document.addEventListener("htmx:afterSettle", function (event) {
    var heading = document.getElementById("comparison-heading");
    if (heading && event.detail.target && event.detail.target.id === "comparison") {
      heading.focus({ preventScroll: true });
      window.scrollTo({ top: 0 });
    }
  });

  // With htmx, "htmx:load" (above) fires once it has processed the page; without it, start at once.
  function initWithoutHtmx() { if (!window.htmx) init(document); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", initWithoutHtmx);
  } else {
    initWithoutHtmx();
  }
})();
