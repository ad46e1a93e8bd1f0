// Copy: a button on every code block of a finished reply (its code, as
// written) and one on the reply itself (its Markdown source, from the
// server). The buttons are the page's own: the reply's body stays exactly
// what the server drew (pieces count its blocks), so they live outside it,
// in one row per article; a code block's button is moved over its block's
// corner, and follows it when the page reflows.
var status = null;  // a polite region that says what was copied
var placed = window.ResizeObserver ? new ResizeObserver(function (entries) {
  entries.forEach(function (entry) { place(entry.target.closest("article.message")); });
}) : null;

function say(text) {
  if (!status) {
    status = document.createElement("div");
    status.id = "copy-status";
    status.className = "visually-hidden";
    status.setAttribute("role", "status");
    document.body.appendChild(status);
  }
  status.textContent = "";
  window.setTimeout(function () { status.textContent = text; }, 50);
}

function writeText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  // Served over plain HTTP to another machine: no clipboard API there.
  return new Promise(function (resolve, reject) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (e) { done = false; }
    area.remove();
    if (done) resolve(); else reject(new Error("copy refused"));
  });
}

// The reply's Markdown, fetched while the click still counts as the
// person's: Safari and Chromium take a promised clipboard item.
function writeSource(id) {
  var url = "/messages/" + id + ".md";
  var source = fetch(url, {credentials: "same-origin"}).then(function (response) {
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.text();
  });
  if (navigator.clipboard && window.isSecureContext && window.ClipboardItem && navigator.clipboard.write) {
    var blob = source.then(function (text) { return new Blob([text], {type: "text/plain"}); });
    return navigator.clipboard.write([new ClipboardItem({"text/plain": blob})]).catch(function () {
      return source.then(writeText);  // a browser that wants the text itself
    });
  }
  return source.then(writeText);
}

function copied(button, promise, what) {
  promise.then(function () {
    button.dataset.copied = "true";
    button.textContent = "Copied";
    say(what + " copied to the clipboard.");
  }, function () {
    button.dataset.copied = "false";
    button.textContent = "Copy failed";
    say("Could not copy " + what.toLowerCase() + ": this browser did not allow it.");
  });
  window.setTimeout(function () {
    delete button.dataset.copied;
    button.textContent = button.dataset.label;
  }, 2000);
}

function button(className, label, name) {
  var b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.dataset.label = label;
  b.textContent = label;
  b.setAttribute("aria-label", name);
  return b;
}

function onClick(e) {
  var target = e.target.closest(".copy-code, .copy-reply");
  if (!target) return;
  var article = target.closest("article.message");
  if (!article) return;
  var id = article.id.slice("message-".length);
  if (target.classList.contains("copy-reply")) {
    copied(target, writeSource(id), "Reply");
    return;
  }
  var blocks = article.querySelectorAll(".message-body pre");
  var pre = blocks[parseInt(target.dataset.block, 10)];
  var code = pre ? pre.querySelector("code") || pre : null;
  copied(target, code ? writeText(code.textContent) : Promise.reject(new Error("gone")), "Code");
}

// Each code button over the top right corner of its block.
function place(article) {
  if (!article || !article.isConnected) return;
  var blocks = article.querySelectorAll(".message-body pre");
  article.querySelectorAll(".copy-tools > .copy-code").forEach(function (b) {
    var pre = blocks[parseInt(b.dataset.block, 10)];
    if (pre) b.style.top = (pre.offsetTop + 4) + "px";
  });
}

function decorate(article) {
  var settled = article.dataset.role === "assistant" && article.dataset.status !== "streaming";
  var tools = article.querySelector(":scope > .copy-tools");
  var body = article.querySelector(":scope > .message-body");
  if (!settled || !body || !body.textContent.trim()) {
    if (tools) tools.remove();
    return;
  }
  var blocks = body.querySelectorAll("pre");
  if (tools && tools.childElementCount === blocks.length + 1) return;
  if (tools) tools.remove();
  tools = document.createElement("div");
  tools.className = "copy-tools";
  blocks.forEach(function (pre, n) {
    var code = pre.querySelector("code");
    var language = code && /(?:^| )language-([\w+#.-]+)/.exec(code.className);
    var name = "Copy code block " + (n + 1) + (language ? " (" + language[1] + ")" : "");
    var b = button("copy-code", "Copy", name);
    b.dataset.block = String(n);
    tools.appendChild(b);
  });
  tools.appendChild(button("copy-reply message-control", "Copy", "Copy this reply as Markdown"));
  // In the row of the reply's controls (before Regenerate), else at its end.
  var anchor = article.querySelector(":scope > .message-control, :scope > .message-usage");
  article.insertBefore(tools, anchor);
  if (placed) placed.observe(body);
  place(article);
}

function decorateAll(root) {
  root.querySelectorAll('article.message[data-role="assistant"]').forEach(decorate);
}

function start() {
  var list = document.getElementById("messages");
  if (!list) return;
  list.addEventListener("click", onClick);
  decorateAll(list);
  new MutationObserver(function (records) {
    var articles = new Set();
    records.forEach(function (record) {
      var target = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      var article = target && target.closest("article.message");
      if (article) articles.add(article);
      record.addedNodes.forEach(function (node) {
        if (node.nodeType !== 1) return;
        if (node.matches("article.message")) articles.add(node);
        else node.querySelectorAll("article.message").forEach(function (a) { articles.add(a); });
      });
    });
    articles.forEach(function (article) {
      if (article.isConnected && article.dataset.role === "assistant") decorate(article);
    });
  }).observe(list, {childList: true, subtree: true, attributes: true, attributeFilter: ["data-status"]});
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
