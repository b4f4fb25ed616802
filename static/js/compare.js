/* Chorus compare page: keyboard shortcuts, strength slider, response timing, htmx glue.
 *
 * Keys: 1 = left/“Response 1”, 2 = right/“Response 2”, 0 = tie, b = both bad, ←/→ = strength −/+10.
 * Keys never fire while typing in a text field. The page works without this script
 * (plain form POST → redirect → GET); this only adds speed and timing.
 */
(function () {
  "use strict";

  document.documentElement.classList.add("js"); // CSS: collapsible responses, the phone switch

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

  // --- long responses: collapsed with "Show more" when they overflow their capped box ---------------
  function setupCollapsible(body) {
    if (body.dataset.collapsibleReady || !body.offsetParent) return; // done, or hidden (measured when shown)
    if (body.scrollHeight <= body.clientHeight + 8) return;
    body.dataset.collapsibleReady = "true";
    body.classList.add("is-collapsed");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-sm show-more";
    button.setAttribute("aria-controls", body.id);
    button.setAttribute("aria-expanded", "false");
    button.textContent = "Show more";
    button.addEventListener("click", function () {
      var expand = body.classList.contains("is-collapsed");
      body.classList.toggle("is-collapsed", !expand);
      body.classList.toggle("is-expanded", expand);
      button.setAttribute("aria-expanded", String(expand));
      button.textContent = expand ? "Show less" : "Show more";
      if (!expand) body.closest(".response").scrollIntoView({ block: "start" });
    });
    body.parentNode.insertBefore(button, body.nextSibling);
  }

  function setupAllCollapsible(form) {
    form.querySelectorAll("[data-collapsible]").forEach(setupCollapsible);
  }

  // --- narrow screens: a "Response 1 | Response 2" switch shows one response at a time --------------
  function setupSwitch(form) {
    var responses = form.querySelector(".responses");
    if (!responses || responses.previousElementSibling && responses.previousElementSibling.classList.contains("response-switch")) return;
    responses.dataset.showing = "1";
    var bar = document.createElement("div");
    bar.className = "response-switch";
    bar.setAttribute("role", "tablist");
    bar.setAttribute("aria-label", "Show response");
    var tabs = ["1", "2"].map(function (side) {
      var article = responses.querySelector('.response[data-side="' + side + '"]');
      var tab = document.createElement("button");
      tab.type = "button";
      tab.id = "switch-" + side;
      tab.setAttribute("role", "tab");
      tab.setAttribute("aria-controls", article.id);
      tab.setAttribute("aria-selected", String(side === "1"));
      tab.textContent = "Response " + side;
      tab.addEventListener("click", function () { show(side); });
      bar.appendChild(tab);
      return tab;
    });
    function show(side) {
      responses.dataset.showing = side;
      tabs.forEach(function (t, i) { t.setAttribute("aria-selected", String(String(i + 1) === side)); });
      setupAllCollapsible(form); // the one just shown can be measured now
    }
    responses.parentNode.insertBefore(bar, responses);
  }

  function init(root) {
    var form = (root && root.querySelector && root.querySelector("form.judge-form")) || currentForm();
    if (!form || renderedAt.has(form)) return;
    renderedAt.set(form, performance.now());
    var slider = form.querySelector("[data-strength]");
    if (slider) {
      // "Not moved" is recorded as no strength rather than the slider's starting 50 (the view reads this).
      var moved = document.createElement("input");
      moved.type = "hidden";
      moved.name = "strength_moved";
      moved.value = "0";
      moved.setAttribute("data-strength-moved", "");
      form.appendChild(moved);
      slider.addEventListener("input", function () { moved.value = "1"; syncOutput(slider); });
      syncOutput(slider);
    }
    setupSwitch(form);
    setupAllCollapsible(form);
    form.dataset.ready = "true"; // shortcuts are live (tests wait for this too)
  }

  function adjustStrength(delta) {
    var form = currentForm();
    var slider = form && form.querySelector("[data-strength]");
    if (!slider) return;
    // 50 → 60 … 100 and 50 → 40 … 10 → 1 (the scale starts at 1).
    slider.value = String(Math.min(100, Math.max(1, Number(slider.value) + delta)));
    var moved = form.querySelector("[data-strength-moved]");
    if (moved) moved.value = "1";
    syncOutput(slider);
  }

  var resizeTimer;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { var f = currentForm(); if (f) setupAllCollapsible(f); }, 150);
  });

  // --- live note: "Your model now predicts N% of your choices", pushed over the study's websocket ------
  function connectLive() {
    var box = document.getElementById("model-status");
    if (!box || !box.dataset.wsPath || !window.WebSocket) return;
    var attempt = 0;
    var everOpened = false;
    function open() {
      var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      var socket;
      try { socket = new WebSocket(scheme + "//" + window.location.host + box.dataset.wsPath); } catch (e) { return; }
      socket.addEventListener("open", function () { everOpened = true; attempt = 0; box.dataset.live = "true"; });
      socket.addEventListener("message", function (event) {
        var data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        if (data && data.event === "model_updated" && data.message) {
          box.textContent = data.message;
          box.hidden = false;
        }
      });
      socket.addEventListener("close", function (event) {
        box.dataset.live = "false";
        // 4403: not allowed. A server without websockets never opens: stop after a couple of tries.
        if (event.code === 4403 || (!everOpened && attempt >= 2) || attempt >= 8) return;
        attempt += 1;
        setTimeout(open, Math.min(30000, 1000 * Math.pow(2, attempt)));
      });
    }
    open();
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
  function initWithoutHtmx() { if (!window.htmx) init(document); connectLive(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", initWithoutHtmx);
  } else {
    initWithoutHtmx();
  }
})();
