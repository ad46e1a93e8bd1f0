// Edit and resend: an Edit button on your last message (while the room ends
// with it and its reply), and Up in an empty composer does the same. The
// composer then edits that message: its text in the field, "Save" posts it
// to /messages/<id>/edit (its answer streams back like a new one), Escape
// or Cancel gives the draft back. The server checks every rule again.
var editing = null;  // {id, draft}: the message being edited, and the draft put aside

function me() {
  var key = document.body.dataset.session;
  return key && /^[0-9a-f]+$/.test(key) ? key : null;
}

// The message this page's person may edit now, or null.
function editable() {
  var articles = document.querySelectorAll("#messages > article.message");
  var last = articles[articles.length - 1];
  if (last && last.dataset.role === "assistant" && articles.length > 1) last = articles[articles.length - 2];
  if (!last || last.dataset.role !== "user" || !me() || last.dataset.session !== me()) return null;
  var after = last.nextElementSibling;
  if (after && after.dataset.status === "streaming") return null;  // its answer is still being written
  return last;
}

function place() {
  var target = editable();
  document.querySelectorAll("#messages .edit-control").forEach(function (b) {
    if (!target || b.closest("article") !== target) b.remove();
  });
  if (!target || target.querySelector(":scope > .edit-control")) return;
  var b = document.createElement("button");
  b.type = "button";
  b.className = "message-control edit-control";
  b.textContent = "Edit";
  b.setAttribute("aria-label", "Edit your message and send it again");
  // A control that comes and goes is not news: the message list must not read it out.
  b.setAttribute("aria-live", "off");
  target.appendChild(b);
}

function field() { return document.querySelector("#composer textarea[name=body]"); }

function banner(show) {
  var composer = document.getElementById("composer");
  var bar = document.getElementById("edit-banner");
  if (show && !bar) {
    bar = document.createElement("p");
    bar.id = "edit-banner";
    bar.className = "edit-banner";
    bar.setAttribute("role", "status");
    var text = document.createElement("span");
    text.textContent = "Editing your message: Save sends it again, Escape cancels.";
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "edit-cancel";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", stop);
    bar.append(text, " ", cancel);
    composer.prepend(bar);
  } else if (!show && bar) {
    bar.remove();
  }
  var send = composer.querySelector("button[type=submit]");
  if (send) send.textContent = show ? "Save" : "Send";
  composer.toggleAttribute("data-editing", show);
}

function start(article) {
  var input = field();
  if (!article || !input) return;
  var body = article.querySelector(".message-body");
  editing = {id: article.id.slice("message-".length), draft: editing ? editing.draft : input.value};
  input.value = body ? body.textContent : "";
  banner(true);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  input.dispatchEvent(new Event("input", {bubbles: true}));  // the composer's count
}

function stop() {
  var input = field();
  if (!editing) return;
  if (input) {
    input.value = editing.draft;
    input.dispatchEvent(new Event("input", {bubbles: true}));
    input.focus();
  }
  editing = null;
  banner(false);
}

// The composer's post goes to the message's edit while editing.
document.addEventListener("htmx:config:request", function (e) {
  var ctx = e.detail.ctx;
  if (!editing || !ctx.sourceElement || ctx.sourceElement.id !== "composer") return;
  ctx.request.action = "/messages/" + editing.id + "/edit";
});
// Saved: the composer is a composer again, with the draft it had.
document.addEventListener("chat:sent", function () {
  if (!editing) return;
  var draft = editing.draft;
  editing = null;
  banner(false);
  var input = field();
  if (input && draft) {
    input.value = draft;
    input.dispatchEvent(new Event("input", {bubbles: true}));
  }
});

document.addEventListener("click", function (e) {
  var button = e.target.closest && e.target.closest(".edit-control");
  if (button) start(button.closest("article.message"));
});
document.addEventListener("keydown", function (e) {
  if (!e.target.matches || !e.target.matches("#composer textarea")) return;
  if (e.key === "Escape" && editing) {
    e.preventDefault();
    stop();
  } else if (e.key === "ArrowUp" && !editing && !e.target.value && !e.shiftKey && !e.altKey && !e.metaKey && !e.ctrlKey) {
    var article = editable();
    if (article) {
      e.preventDefault();
      start(article);
    }
  }
});

function begin() {
  var list = document.getElementById("messages");
  if (!list || !document.getElementById("composer")) return;
  place();
  new MutationObserver(function () {
    place();
    // The message being edited is no longer yours to edit (someone wrote since).
    if (editing && (!editable() || editable().id !== "message-" + editing.id)) {
      var note = document.getElementById("composer-error");
      if (note) note.textContent = "The conversation moved on: your message can no longer be edited. Your text is still here.";
    }
  }).observe(list, {childList: true, attributes: true, attributeFilter: ["data-status"]});
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", begin);
else begin();
