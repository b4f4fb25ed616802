/* Chorus live conversations: stream the models' answers into the page, then judge them.
 *
 * The message form works without this script (a plain POST answers in full, then redirects). With it, the
 * form POSTs to the stream URL and reads server-sent events from the response body: {"type": "start"},
 * {"type": "delta", slot, text}, {"type": "end", slot}, then {"type": "done"} (the turn is stored: the
 * judging form is loaded with htmx) or {"type": "error", message} (nothing was stored: offer a retry).
 * Streamed text is set as textContent (never HTML); the stored answers come back rendered and sanitized.
 * Keys on the judging form: 1 / 2 / 0 (tie) / b (both bad), as on the compare page.
 */
(function () {
  "use strict";

  var renderedAt = new WeakMap();

  function section() { return document.getElementById("talk"); }

  function showError(root, message, retry) {
    var box = document.createElement("div");
    box.className = "alert alert-error talk-error";
    box.setAttribute("role", "alert");
    box.setAttribute("data-talk-error", "");
    var text = document.createElement("span");
    text.textContent = message;
    box.appendChild(text);
    if (retry) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-sm";
      button.textContent = "Try again";
      button.setAttribute("data-retry", "");
      button.addEventListener("click", function () { box.remove(); retry(); });
      box.appendChild(button);
    }
    var old = root.querySelector("[data-talk-error]");
    if (old) old.remove();
    root.insertBefore(box, root.querySelector(".conversation"));
  }

  function answerBoxes(root, n) {
    var holder = root.querySelector("[data-live-answers]");
    holder.innerHTML = "";
    holder.hidden = false;
    var boxes = [];
    for (var i = 0; i < n; i++) {
      var article = document.createElement("article");
      article.className = "live-answer";
      article.dataset.state = "streaming";
      article.dataset.slot = String(i);
      var h = document.createElement("h2");
      h.textContent = "Response " + (i + 1);
      var body = document.createElement("div");
      body.className = "stream-text";
      article.appendChild(h);
      article.appendChild(body);
      holder.appendChild(article);
      boxes.push(article);
    }
    return boxes;
  }

  function reload(root) {
    var url = root.dataset.talkUrl;
    if (window.htmx) {
      window.htmx.ajax("GET", url, { target: "#talk", swap: "outerHTML" });
    } else {
      window.location.assign(url);
    }
  }

  function send(form) {
    var root = section();
    var button = form.querySelector("[data-send]");
    var textarea = form.querySelector("textarea[name=message]");
    if (!textarea.value.trim()) { textarea.focus(); return; }
    var data = new FormData(form);
    button.disabled = true;
    textarea.readOnly = true;
    var boxes = [];
    var buffer = "";
    var finished = false;
    function fail(message) {
      finished = true;
      button.disabled = false;
      textarea.readOnly = false;
      var holder = root.querySelector("[data-live-answers]");
      holder.hidden = true;
      holder.innerHTML = "";
      showError(root, message, function () { send(form); });
    }
    function handle(event) {
      if (event.type === "start") boxes = answerBoxes(root, event.answers);
      else if (event.type === "delta" && boxes[event.slot]) boxes[event.slot].lastChild.textContent += event.text;
      else if (event.type === "end" && boxes[event.slot]) boxes[event.slot].dataset.state = "done";
      else if (event.type === "done") { finished = true; reload(root); }
      else if (event.type === "error") fail(event.message);
    }
    fetch(root.dataset.streamUrl, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "Accept": "text/event-stream", "X-CSRFToken": data.get("csrfmiddlewaretoken") || "" },
    }).then(function (response) {
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            if (!finished) fail("The connection closed before the answers were complete. Nothing was saved; please try again.");
            return;
          }
          buffer += decoder.decode(chunk.value, { stream: true });
          var parts = buffer.split("\n\n");
          buffer = parts.pop();
          parts.forEach(function (part) {
            part.split("\n").forEach(function (line) {
              if (line.indexOf("data:") === 0) {
                try { handle(JSON.parse(line.slice(5))); } catch (e) { /* a torn line: ignore */ }
              }
            });
          });
          if (!finished) return pump();
        });
      }
      return pump();
    }).catch(function () {
      if (!finished) fail("The connection to the server failed. Nothing was saved; please try again.");
    });
  }

  function init(root) {
    root = root || document;
    var talkForm = root.querySelector ? root.querySelector("[data-talk-form]") : null;
    if (talkForm && !talkForm.dataset.ready) {
      talkForm.dataset.ready = "true";
      talkForm.addEventListener("submit", function (event) { event.preventDefault(); send(talkForm); });
      talkForm.querySelectorAll("[data-seed]").forEach(function (b) {
        b.addEventListener("click", function () {
          var t = talkForm.querySelector("textarea[name=message]");
          t.value = b.dataset.seed;
          t.focus();
        });
      });
    }
    var judge = root.querySelector ? root.querySelector("form.talk-judge") : null;
    if (judge && !renderedAt.has(judge)) {
      renderedAt.set(judge, performance.now());
      judge.dataset.ready = "true";
      judge.querySelectorAll("[data-rating]").forEach(function (slider) {
        var out = document.getElementById(slider.dataset.output);
        slider.addEventListener("input", function () { if (out) out.textContent = slider.value; });
      });
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("talk-judge")) return;
    var input = form.querySelector("[data-time-ms]");
    var start = renderedAt.get(form);
    if (input && start !== undefined) input.value = String(Math.round(performance.now() - start));
  }, true);

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    var t = event.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
    var form = document.querySelector("#talk form.talk-judge");
    if (!form || !renderedAt.has(form)) return;
    var key = event.key === "B" ? "b" : event.key;
    var button = form.querySelector('button[data-key="' + key + '"]');
    if (!button || button.disabled) return;
    button.click();
    event.preventDefault();
  });

  // A 400 carries the re-rendered turn with its error message: swap it in like a success.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 400 && event.detail.target && event.detail.target.id === "talk") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  document.addEventListener("htmx:load", function (event) { init(event.detail.elt); });
  document.addEventListener("htmx:afterSettle", function (event) {
    var heading = document.getElementById("talk-heading");
    if (heading && event.detail.target && event.detail.target.id === "talk") heading.focus({ preventScroll: true });
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(document); });
  else init(document);
})();
