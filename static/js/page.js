// Reading the page: follow new text only while the reader is at the bottom,
// relative timestamps, this page's own controls and "(you)". Every change to
// the message list (the asker's own tokens, the socket's sentences and
// snapshots, the final swap) is seen here through one MutationObserver,
// whatever carried it; announcer.js says what screen readers hear of it.
import {arrived, oldestShown, speak, startAnnouncer} from "./announcer.js";


var list = null;       // #messages
var newButton = null;  // #new-messages: "something arrived below"

// -- scrolling -----------------------------------------------------------------
// Pinned: the reader is at the bottom, and new text keeps them there. Only the
// reader unpins (by moving up) or re-pins (by reaching the bottom); text
// arriving below never moves someone who scrolled up to read.
var pinned = true;
var lastTop = 0;
var changedSince = [];  // elements changed since the last frame
var frame = 0;

function scroller() { return document.scrollingElement || document.documentElement; }

function fromBottom() {
  var el = scroller();
  return el.scrollHeight - el.scrollTop - el.clientHeight;
}

// The composer sits over the bottom of the viewport.
function visibleBottom() {
  var composer = document.getElementById("composer");
  return composer ? composer.getBoundingClientRect().top : window.innerHeight;
}

function setPinned(value) {
  pinned = value;
  // While pinned, the browser's scroll anchoring would only move the view up
  // when something above changes size; following the bottom is our job then.
  document.documentElement.classList.toggle("pinned", value);
  if (value) showNew(false);
}

function showNew(show) {
  if (newButton && newButton.hidden === show) newButton.hidden = !show;
}

function scrollToBottom() {
  window.scrollTo(0, scroller().scrollHeight);
  lastTop = scroller().scrollTop;
  setPinned(true);
}

function onScroll() {
  var top = scroller().scrollTop;
  var distance = fromBottom();
  if (top < lastTop - 1 && distance > 2) setPinned(false);
  else if (distance <= 24) setPinned(true);
  lastTop = top;
}

// Intent to read above, seen before the scroll itself: unpin at once, so a
// frame that follows the bottom cannot undo the reader's first step up.
function movingUp() {
  if (scroller().scrollTop > 0) setPinned(false);
}

function followLater(element) {
  changedSince.push(element);
  if (!frame) frame = window.requestAnimationFrame(follow);
}

function follow() {
  frame = 0;
  var changed = changedSince;
  changedSince = [];
  if (pinned) {
    if (fromBottom() > 0) scrollToBottom();
    return;
  }
  var bottom = visibleBottom();
  for (var i = 0; i < changed.length; i++) {
    if (changed[i].isConnected && changed[i].getBoundingClientRect().bottom > bottom + 1) {
      showNew(true);
      return;
    }
  }
}

function jumpToNewest() {
  scrollToBottom();
  var field = document.querySelector("#composer textarea");
  if (field) field.focus({preventScroll: true});
}

// -- timestamps ----------------------------------------------------------------
// The server writes the absolute time (UTC) into each <time>; here it becomes
// "3 min ago" with the local time in its title, kept current.
var MINUTE = 60 * 1000;

function clock(date) {
  return date.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
}

function relativeTime(date, now) {
  var ago = now - date.getTime();
  if (ago < MINUTE) return "just now";  // a server clock slightly ahead too
  if (ago < 60 * MINUTE) return Math.floor(ago / MINUTE) + " min ago";
  var today = new Date(now);
  today.setHours(0, 0, 0, 0);
  if (date >= today) return Math.floor(ago / (60 * MINUTE)) + " h ago";
  var yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (date >= yesterday) return "yesterday " + clock(date);
  var options = {day: "numeric", month: "short"};
  if (date.getFullYear() !== today.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString(undefined, options) + ", " + clock(date);
}

function showTime(el, now) {
  // Python writes microseconds; Date wants at most milliseconds.
  var date = new Date(el.getAttribute("datetime").replace(/(\.\d{3})\d+/, "$1"));
  if (isNaN(date.getTime())) return;
  var label = relativeTime(date, now);
  var title = date.toLocaleString(undefined, {dateStyle: "full", timeStyle: "short"});
  // Keeping the time current is not news: screen readers are not told.
  if (el.getAttribute("aria-live") !== "off") el.setAttribute("aria-live", "off");
  if (el.title !== title) el.title = title;
  if (el.textContent !== label) el.textContent = label;
}

function showTimes(root) {
  var now = Date.now();
  root.querySelectorAll("time[datetime]").forEach(function (el) { showTime(el, now); });
}

function articlesIn(node) {
  if (node.nodeType !== 1) return [];
  if (node.matches("article.message")) return [node];
  return Array.prototype.slice.call(node.querySelectorAll("article.message"));
}

// A control that had focus goes with its article when the article is
// swapped (Stop gives way to Retry): focus the new article's control then,
// rather than dropping a keyboard user at the top of the page.
var lastFocus = null;
document.addEventListener("focusin", function (e) { lastFocus = e.target; });

function refocus(articleId) {
  var active = document.activeElement;
  if (active && active !== document.body) return;
  var article = document.getElementById(articleId);
  var controls = article ? article.querySelectorAll("button, a[href]") : [];
  for (var i = 0; i < controls.length; i++) {
    if (controls[i].getClientRects().length) {
      controls[i].focus();
      return;
    }
  }
}

function onMutations(records) {
  var touched = new Set();
  var lostFocus = null;
  var bound = oldestShown();
  records.forEach(function (record) {
    var target = record.target.nodeType === 1 ? record.target : record.target.parentElement;
    if (!target || !target.closest("#messages") || target.closest("time")) return;
    record.removedNodes.forEach(function (node) {
      if (lastFocus && node.nodeType === 1 && node.matches("article.message") && node.contains(lastFocus)) lostFocus = node.id;
    });
    record.addedNodes.forEach(function (node) {
      articlesIn(node).forEach(function (article) {
        arrived(article, bound);
        showTimes(article);
        if (article.dataset.role === "assistant") touched.add(article);
      });
      if (node.nodeType === 1 || node.textContent.trim()) followLater(node.nodeType === 1 ? node : target);
    });
    if (record.type === "characterData") followLater(target);
    var article = target.closest("article.message");
    if (article && article.dataset.role === "assistant") touched.add(article);
  });
  touched.forEach(function (article) {
    if (article.isConnected) speak(article);
  });
  if (lostFocus) refocus(lostFocus);
}

function start() {
  list = document.getElementById("messages");
  if (!list) return;
  newButton = document.getElementById("new-messages");
  startAnnouncer(list);
  showTimes(document.body);  // the room list's times too
  new MutationObserver(onMutations).observe(document.body, {childList: true, subtree: true, characterData: true});
  window.setInterval(function () { showTimes(document.body); }, 30 * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) showTimes(document.body);
  });

  if (newButton) newButton.addEventListener("click", jumpToNewest);
  window.addEventListener("scroll", onScroll, {passive: true});
  window.addEventListener("wheel", function (e) { if (e.deltaY < 0) movingUp(); }, {passive: true});
  document.addEventListener("keydown", function (e) {
    if (/^(PageUp|ArrowUp|Home)$/.test(e.key) && !e.target.closest("textarea, input, select, [contenteditable]")) movingUp();
  });
  document.addEventListener("chat:sent", function () {
    setPinned(true);  // the sender wants to see their message
    followLater(list);
  });
  // The composer grows (a longer draft, an error) and the window resizes
  // (a phone's keyboard): keep a pinned reader at the bottom, and the
  // new-messages button just above the composer.
  var composer = document.getElementById("composer");
  var topbar = document.querySelector(".topbar");
  if (composer && window.ResizeObserver) {
    new ResizeObserver(function () {
      var root = document.documentElement.style;
      root.setProperty("--composer-height", composer.offsetHeight + "px");
      if (topbar) root.setProperty("--topbar-height", topbar.offsetHeight + "px");
      if (pinned) followLater(list);
    }).observe(composer);
    if (topbar) new ResizeObserver(function () {
      document.documentElement.style.setProperty("--topbar-height", topbar.offsetHeight + "px");
    }).observe(topbar);
  }
  window.addEventListener("resize", function () { if (pinned) followLater(list); });

  // Open at the newest message (unless the address names another).
  history.scrollRestoration = "manual";
  var named = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (named) setPinned(false);
  else scrollToBottom();
  window.addEventListener("load", function () { if (pinned) scrollToBottom(); });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

// Articles are rendered once for every viewer; this page shows its own
// controls (Stop, Retry) and marks its own messages with "(you)".
function markMine() {
  var me = document.body.dataset.session;
  if (!me || !/^[0-9a-f]+$/.test(me)) return;
  var sheet = new CSSStyleSheet();
  var mine = 'article[data-session="' + me + '"]';
  sheet.replaceSync(
    mine + " .mine-only { display: inline-block; }\n" +
    mine + '[data-role="user"] .message-author::after { content: " (you)"; font-weight: normal; }' +
    '\n.presence-list li[data-session="' + me + '"] .presence-name::after { content: " (you)"; font-weight: normal; }'
  );
  document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
}

window.addEventListener("DOMContentLoaded", markMine);
