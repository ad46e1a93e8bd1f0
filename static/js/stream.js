// The glue between htmx and the server's streams: the CSRF header, where the
// asker's own stream swaps, what the page socket asks for on each
// (re)connect, following a reply whose stream broke, and older messages
// loaded above what the reader is looking at.
import {composerSent} from "./composer.js";

var followed = new Set();   // replies whose own stream broke: follow them on the socket
var socket = null;          // the hx-ws connection, once open
var activeReply = new WeakMap(); // form -> reply id it is streaming

function csrf() {
  var meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function lastMessageId() {
  var articles = document.querySelectorAll("#messages > article.message");
  var last = articles[articles.length - 1];
  return last ? parseInt(last.id.slice("message-".length), 10) : 0;
}

function streamingIds() {
  var ids = [];
  document.querySelectorAll('#messages > article.message[data-status="streaming"]').forEach(function (a) {
    ids.push(a.id.slice("message-".length));
  });
  return ids;
}

function follow(id) {
  followed.add(String(id));
  if (socket && socket.socket && socket.socket.readyState === WebSocket.OPEN) {
    socket.socket.send(JSON.stringify({follow: parseInt(id, 10)}));
  }
}

// A page whose server went away tries again every 2 s at most (hx-ws
// doubles its delay up to a minute): it is back within seconds of a
// restart, showing what the restart settled (a reply a crash interrupted).
htmx.config.ws = Object.assign({}, htmx.config.ws, {reconnectMaxDelay: 2000});

// Every state-changing request carries the CSRF token.
document.addEventListener("htmx:config:request", function (e) {
  e.detail.ctx.request.headers["X-CSRF-Token"] = csrf();
});

// hx-sse swaps every event into the request's target, which is fixed when the
// request starts; the server names the reply body only in its response
// headers. The extension cancels htmx:before:response (so it is never
// dispatched), so keep the request's ctx and retarget once the stream is
// connected, before its first event is swapped.
var contexts = new WeakMap(); // form -> ctx of its request in flight
var streams = new WeakMap();  // form -> {ctx, body} of its reply stream
document.addEventListener("htmx:before:request", function (e) {
  contexts.set(e.detail.ctx.sourceElement, e.detail.ctx);
});
document.addEventListener("htmx:sse:after:connection", function (e) {
  var ctx = contexts.get(e.target);
  if (!ctx || !ctx.response) return;
  var headers = ctx.response.headers;
  if (headers.get("HX-Retarget")) ctx.target = headers.get("HX-Retarget");
  if (headers.get("HX-Reswap")) ctx.swap = headers.get("HX-Reswap");
  if (headers.get("X-Reply-Id")) activeReply.set(e.target, headers.get("X-Reply-Id"));
  if (headers.get("HX-Retarget")) streams.set(e.target, {ctx: ctx, body: headers.get("HX-Retarget")});
  if (e.target.id === "composer" && ctx.response.status < 300) composerSent(e.target);
});

// The reply is drawn block by block; most events only add to the end of its
// last paragraph, list item or code line. "reply-at" says how many levels
// below the reply body that element is (the last child at each level), and
// the stream's plain events go there from then on.
document.addEventListener("reply-at", function (e) {
  var stream = streams.get(e.target);
  var depth = parseInt(e.detail && e.detail.data, 10);
  if (!stream || !(depth >= 0 && depth < 20)) return;
  stream.ctx.target = stream.body + " > :last-child".repeat(depth);
});

// The author's stream ended: if its reply is still streaming, the stream
// broke (network, proxy) while the page stays open, so follow it like any
// observer until it completes.
document.addEventListener("htmx:sse:close", function (e) {
  var id = activeReply.get(e.target);
  activeReply.delete(e.target);
  if (!id) return;
  var article = document.getElementById("message-" + id);
  if (article && article.dataset.status === "streaming") follow(id);
});

// Before each (re)connect, tell the server what this page already shows so
// its snapshot makes the page converge (the socket replays nothing itself).
document.addEventListener("htmx:ws:before:connection", function (e) {
  var connection = e.detail.connection;
  var url = new URL(connection.url);
  url.searchParams.set("after", String(lastMessageId()));
  url.searchParams.set("streaming", streamingIds().join(","));
  url.searchParams.set("follow", Array.from(followed).join(","));
  connection.url = url.toString();
});
document.addEventListener("htmx:ws:after:connection", function (e) {
  socket = e.detail.connection;
  document.body.dataset.live = "true";
});
document.addEventListener("htmx:ws:close", function () {
  document.body.dataset.live = "false";
});

// Older messages (the "#older" link, loaded by htmx when revealed or
// clicked) go in above what the reader is looking at: the message the link
// loads before (data-before) stays where it was. Screen readers are not
// told: the page's announcer marks them as history.
var olderLoad = null;
document.addEventListener("htmx:before:request", function (e) {
  var source = e.detail.ctx.sourceElement;
  if (!source || source.id !== "older") return;
  var anchor = document.getElementById("message-" + source.dataset.before);
  olderLoad = {ctx: e.detail.ctx, anchor: anchor, top: anchor ? anchor.getBoundingClientRect().top : 0};
});
document.addEventListener("htmx:before:swap", function (e) {
  if (!olderLoad || e.detail.ctx !== olderLoad.ctx) return;
  var response = e.detail.ctx.response;
  if (response && response.status >= 400) {
    // Keep the link (a click tries again) rather than swap in an error page.
    e.preventDefault();
    var link = document.getElementById("older");
    if (link) link.textContent = "Older messages could not be loaded. Try again";
    olderLoad = null;
    return;
  }
  // An article the page already shows (a retried reply pushed to the page
  // while it was off screen) is kept: the socket keeps it current, and this
  // response may be older than what the page has.
  olderLoad.streaming = [];
  (e.detail.tasks || []).forEach(function (task) {
    if (!task.fragment || !task.fragment.querySelectorAll) return;
    task.fragment.querySelectorAll("article.message[id]").forEach(function (article) {
      if (document.getElementById(article.id)) article.remove();
      else if (article.dataset.status === "streaming") olderLoad.streaming.push(article.id.slice("message-".length));
    });
  });
});
// (htmx 4 fires after:request before the swap; after:swap once it is all in.)
document.addEventListener("htmx:after:swap", function (e) {
  if (!olderLoad || e.detail.ctx !== olderLoad.ctx) return;
  var load = olderLoad;
  olderLoad = null;
  if (load.anchor && load.anchor.isConnected) {
    window.scrollBy(0, load.anchor.getBoundingClientRect().top - load.top);
  }
  // A reply loaded here that is still being written: the socket has not
  // been sending it to this page, so ask for it and follow it.
  (load.streaming || []).forEach(follow);
});
document.addEventListener("htmx:finally:request", function (e) {
  if (olderLoad && e.detail.ctx === olderLoad.ctx) olderLoad = null;  // failed before any swap
});

// Open at the newest message now, before htmx starts watching the link to
// older messages at the top (it would otherwise load them on every visit).
window.scrollTo(0, document.body.scrollHeight);
