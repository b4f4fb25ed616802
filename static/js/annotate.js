/* Chorus annotator pages: live slider values, "prefer not to say" toggles, copy-the-code button. */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  ready(function () {
    // After a rejected profile, take the person to the first question that needs an answer.
    var firstError = document.querySelector(".profile-form .has-error");
    if (firstError) {
      var control = firstError.querySelector("input:not([type=hidden]):not(:disabled), select, textarea");
      firstError.scrollIntoView({ block: "start" });
      if (control) control.focus({ preventScroll: true });
    }

    // Show each profile slider's value next to it.
    document.querySelectorAll('.profile-form input[type="range"][data-output]').forEach(function (slider) {
      slider.addEventListener("input", function () {
        var out = document.getElementById(slider.dataset.output);
        if (out) out.textContent = slider.value;
      });
    });

    // "Prefer not to say" for one input (a slider or the text box): disable it while ticked.
    document.querySelectorAll("input[data-prefer-not]").forEach(function (box) {
      var target = document.getElementById(box.dataset.preferNot);
      if (!target) return;
      box.addEventListener("change", function () {
        target.disabled = box.checked;
        var out = target.dataset.output && document.getElementById(target.dataset.output);
        if (out) out.textContent = box.checked ? "—" : target.value;
      });
    });

    // "Prefer not to say" for a checkbox group: exclusive with the other answers.
    document.querySelectorAll("input[data-prefer-not-group]").forEach(function (box) {
      var group = box.closest("[data-multi]");
      if (!group) return;
      var others = Array.prototype.filter.call(group.querySelectorAll('input[type="checkbox"]'), function (el) {
        return el !== box;
      });
      box.addEventListener("change", function () {
        if (box.checked) others.forEach(function (el) { el.checked = false; });
      });
      others.forEach(function (el) {
        el.addEventListener("change", function () { if (el.checked) box.checked = false; });
      });
    });

    // Copy the completion code.
    document.querySelectorAll("[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function () {
        var source = document.getElementById(button.dataset.copyTarget);
        var status = document.getElementById("copy-status");
        var text = source ? source.textContent.trim() : "";
        function done(ok) { if (status) status.textContent = ok ? "Copied!" : "Select the code and copy it."; }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
        } else {
          var range = document.createRange();
          range.selectNodeContents(source);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          var ok = false;
          try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
          done(ok);
        }
      });
    });
  });
})();
