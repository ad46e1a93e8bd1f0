// What screen readers hear: a new message is read out whole by the message
// list (a polite live region); a reply goes to a separate polite announcer a
// sentence (or list item, or code line) at a time, and the rest when it ends.
// -- what screen readers hear --------------------------------------------------
// The message list is a polite live region: a new message is read out whole.
// A reply is not read from the list (it grows token by token for the asker,
// and its article is swapped when it ends); its text goes to a separate
// polite announcer instead, a whole sentence (or list item, or code line) at
// a time, and the rest when it ends. A reply streaming is also aria-busy.
var announcer = null;  // the polite region that receives whole sentences
var known = new Set();     // article ids this page has shown
var oldest = Infinity;     // the lowest message id among them
var replies = new Map();   // reply id -> {said: text announced, done, named}
var BOUNDARY = /[.!?\u2026]+["'\u201d\u2019)\]*_]*(?=\s)|\n/g;

function sentencesEnd(text) {
  var end = 0;
  var match;
  BOUNDARY.lastIndex = 0;
  while ((match = BOUNDARY.exec(text)) !== null) end = match.index + match[0].length;
  return end;
}

function commonPrefix(a, b) {
  var n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return a.slice(0, n);
}

function say(article, text, state) {
  text = text.replace(/\s+/g, " ").trim();
  if (!text || !announcer) return;
  if (!state.named) {
    var author = article.querySelector(".message-author");
    text = (author ? author.textContent.trim() + ": " : "") + text;
    state.named = true;
  }
  var line = document.createElement("p");
  line.dataset.reply = article.id;
  line.textContent = text;
  announcer.appendChild(line);
  while (announcer.childElementCount > 20) announcer.removeChild(announcer.firstElementChild);
}

// A body's text with a line break between blocks (paragraphs, list items,
// table rows), so the end of an item counts as a boundary. Only ever grows
// at its end while the body grows: no break is written before the next
// block has text.
var BLOCKS = /^(P|LI|UL|OL|PRE|H[1-6]|BLOCKQUOTE|TABLE|THEAD|TBODY|TR|HR|DIV|BR)$/;
var CONTAINERS = /^(UL|OL|TABLE|THEAD|TBODY|TR|BLOCKQUOTE|DIV)$/;

function bodyText(article) {
  var body = article.querySelector(".message-body");
  var out = "";
  var gap = "";
  (function walk(node) {
    for (var child = node.firstChild; child; child = child.nextSibling) {
      if (child.nodeType === 3) {
        if (CONTAINERS.test(node.nodeName) && !child.data.trim()) continue;
        if (out) out += gap;
        gap = "";
        out += child.data;
      } else if (child.nodeType === 1) {
        var block = BLOCKS.test(child.nodeName);
        var cell = child.nodeName === "TD" || child.nodeName === "TH";
        if (block) gap = "\n";
        else if (cell && !gap) gap = " ";
        walk(child);
        if (block) gap = "\n";
        else if (cell && !gap) gap = " ";
      }
    }
  })(body || document.createElement("div"));
  return out;
}

// Called for every reply whose article changed: announce what it completed.
export function speak(article) {
  var streaming = article.dataset.status === "streaming";
  var state = replies.get(article.id);
  if (!state || (state.done && streaming)) {  // new, or retried
    state = {said: "", done: false, named: false};
    replies.set(article.id, state);
  }
  if (state.done) return;
  var text = bodyText(article);
  if (text.slice(0, state.said.length) !== state.said) state.said = commonPrefix(state.said, text);
  var rest = text.slice(state.said.length);
  var end = streaming ? sentencesEnd(rest) : rest.length;
  if (end > 0) {
    say(article, rest.slice(0, end), state);
    state.said += rest.slice(0, end);
  }
  if (!streaming) {
    state.done = true;
    var notice = article.querySelector(".message-notice");
    if (notice) say(article, notice.textContent, state);
  }
}

function messageId(article) {
  return parseInt(article.id.slice("message-".length), 10) || 0;
}

// Older than all the page showed before (``bound``, the oldest id then):
// history loaded above it, not news.
function isHistory(article, bound) {
  return bound !== Infinity && !known.has(article.id) && messageId(article) < bound;
}

function prepare(article, bound) {
  var assistant = article.dataset.role === "assistant";
  // A reply is told by the announcer; an article swapped for one this page
  // already showed (a snapshot after reconnecting) or older history is no
  // news either.
  if (assistant || known.has(article.id) || isHistory(article, bound)) article.setAttribute("aria-live", "off");
  if (assistant && article.dataset.status === "streaming") article.setAttribute("aria-busy", "true");
  else article.removeAttribute("aria-busy");
  known.add(article.id);
  oldest = Math.min(oldest, messageId(article));
}

// The oldest message id the page showed so far: what is older is history.
export function oldestShown() {
  return oldest;
}

// An article that arrived (``bound``: the oldest id before this change):
// history loaded above is not news, and its reply is not read out.
export function arrived(article, bound) {
  if (isHistory(article, bound) && !replies.has(article.id)) {
    replies.set(article.id, {said: bodyText(article), done: article.dataset.status !== "streaming", named: true});
  }
  prepare(article, bound);
}

// Start: the region replies are read into, and what the page shows now
// (not news).
export function startAnnouncer(list) {
  announcer = document.createElement("div");
  announcer.id = "announcer";
  announcer.className = "visually-hidden";
  announcer.setAttribute("aria-live", "polite");
  document.body.appendChild(announcer);
  list.querySelectorAll("article.message").forEach(function (article) {
    prepare(article, -Infinity);
    if (article.dataset.role === "assistant") {
      var streaming = article.dataset.status === "streaming";
      replies.set(article.id, {said: bodyText(article), done: !streaming, named: !streaming});
    }
  });
}
