// The composer: its keys and focus, its limit said before sending, and
// every refusal shown where the person is typing, with what they typed kept.
// The composer: clear after a successful send, keep focus; Enter sends,
// Shift+Enter adds a line.
export function composerSent(form) {
  var field = form.querySelector("textarea[name=body]");
  field.value = "";
  form.querySelector("#composer-error").textContent = "";
  showCount(field);
  field.focus();
  document.dispatchEvent(new CustomEvent("chat:sent"));
}

// The composer says its limit before sending: from 80% of it a count
// ("3,400 / 4,000"), over it by how much. Its maxlength (the limit without
// JavaScript) goes, so that a paste over the limit is kept whole for the
// person to shorten instead of cut where the browser stops it; the server
// refuses it with the same numbers. Screen readers hear the limit crossed,
// not every keystroke.
var overLimit = false;
function showCount(field) {
  var count = document.getElementById("composer-count");
  var status = document.getElementById("composer-limit");
  var max = parseInt(field.dataset.maxLength, 10);
  if (!count || !(max > 0)) return;
  var n = Array.from(field.value.trim()).length;  // code points, as the server counts
  var over = n > max;
  if (n < max * 0.8) count.textContent = "";
  else if (over) count.textContent = (n - max).toLocaleString("en") + " characters over the limit of " + max.toLocaleString("en");
  else count.textContent = n.toLocaleString("en") + " / " + max.toLocaleString("en");
  count.toggleAttribute("data-over", over);
  if (over) field.setAttribute("aria-invalid", "true");
  else field.removeAttribute("aria-invalid");
  if (status && over !== overLimit) {
    status.textContent = over ? "Over the limit of " + max.toLocaleString("en") + " characters." : "Within the limit again.";
  }
  overLimit = over;
}
document.addEventListener("input", function (e) {
  if (e.target.matches && e.target.matches("#composer textarea")) showCount(e.target);
});
window.addEventListener("DOMContentLoaded", function () {
  var field = document.querySelector("#composer textarea[data-max-length]");
  if (!field) return;
  field.removeAttribute("maxlength");
  showCount(field);
});

// Every refusal the app makes is worded for the page (X-Refusal): under the
// composer, or in the name form. A refusal it did not make (a proxy's 502,
// a router's 413) or no answer at all still says so there, and is never
// swapped in as HTML; what was typed stays, as only a success clears it.
function errorSlot(source) {
  var form = source && source.closest ? source.closest("form") : null;
  return (form && form.querySelector('[role="alert"]')) || document.getElementById("composer-error");
}
// What a refusal in the composer adds: the text the person typed is still there.
function keptNote(source) {
  var composer = source && source.closest && source.closest("#composer");
  return composer ? " Your message was not sent; it is still here." : "";
}
function refusedText(source, status) {
  var kept = keptNote(source);
  if (status === 413) return "That is too large for the server to take (error 413)." + kept;
  if (status >= 500) return "The server is not answering properly (error " + status + "). Try again in a moment." + kept;
  return "The server refused that (error " + status + ")." + kept;
}
function unworded(ctx) {
  return ctx.response && ctx.response.status >= 400 && !ctx.response.headers.get("X-Refusal");
}
function isPost(ctx) {
  return String(ctx.request && ctx.request.method).toUpperCase() === "POST";
}
document.addEventListener("htmx:before:swap", function (e) {
  var ctx = e.detail.ctx;
  if (!isPost(ctx) || !unworded(ctx)) return;
  e.preventDefault();
  var slot = errorSlot(ctx.sourceElement);
  if (slot) slot.textContent = refusedText(ctx.sourceElement, ctx.response.status);
});
document.addEventListener("htmx:error", function (e) {
  var ctx = e.detail.ctx;
  if (!ctx || ctx.response || !isPost(ctx)) return;  // only a request that got no answer
  var slot = errorSlot(ctx.sourceElement);
  if (slot) slot.textContent = "Could not reach the server. Check your connection and try again." + keptNote(ctx.sourceElement);
});
// A post refused for an expired CSRF token brings a fresh one: every form
// on the page takes it, so pressing Send again works.
document.addEventListener("htmx:after:request", function (e) {
  var response = e.detail.ctx.response;
  var token = response && response.headers.get("X-CSRF-Token");
  if (!token) return;
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) meta.content = token;
  document.querySelectorAll('input[name="csrf_token"]').forEach(function (input) { input.value = token; });
});
document.addEventListener("htmx:after:request", function (e) {
  var form = e.detail.ctx.sourceElement;
  if (form && form.id === "composer" && e.detail.ctx.response && e.detail.ctx.response.status < 300) composerSent(form);
});
document.addEventListener("keydown", function (e) {
  var field = e.target;
  if (e.key !== "Enter" || e.shiftKey || e.isComposing || !field.matches || !field.matches("#composer textarea")) return;
  e.preventDefault();
  var button = field.form.querySelector("button[type=submit]");
  if (button && !button.disabled) field.form.requestSubmit(button);
});
