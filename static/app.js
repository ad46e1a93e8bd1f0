// The page's small glue around htmx: where the author's stream swaps, what the
// socket asks for on each (re)connect, and the composer's keyboard and focus.
(function () {
  "use strict";

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

  function nearBottom() {
    var el = document.scrollingElement || document.documentElement;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 120;
  }

  function follow(id) {
    followed.add(String(id));
    if (socket && socket.socket && socket.socket.readyState === WebSocket.OPEN) {
      socket.socket.send(JSON.stringify({follow: parseInt(id, 10)}));
    }
  }

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

  // Keep the newest message in view, but only for a reader already at the bottom.
  var stick = true;
  document.addEventListener("htmx:before:swap", function () { stick = nearBottom(); });
  document.addEventListener("htmx:after:swap", function () {
    if (stick) window.scrollTo(0, document.body.scrollHeight);
  });

  // The composer: clear after a successful send, keep focus; Enter sends,
  // Shift+Enter adds a line.
  function composerSent(form) {
    var field = form.querySelector("textarea[name=body]");
    field.value = "";
    form.querySelector("#composer-error").textContent = "";
    field.focus();
  }
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

  // Articles are rendered once for every viewer; this page shows its own
  // controls (Stop, Retry) and marks its own messages with "(you)".
  function markMine() {
    var me = document.body.dataset.session;
    if (!me || !/^[0-9a-f]+$/.test(me)) return;
    var sheet = new CSSStyleSheet();
    var mine = 'article[data-session="' + me + '"]';
    sheet.replaceSync(
      mine + " .mine-only { display: inline-block; }\n" +
      mine + '[data-role="user"] .message-author::after { content: " (you)"; font-weight: normal; }'
    );
    document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
  }

  // Older messages (the "#older" link, loaded by htmx when revealed) go in
  // above what the reader is looking at: keep that where it was.
  var olderAnchor = null;
  document.addEventListener("htmx:before:request", function (e) {
    var source = e.detail.ctx.sourceElement;
    if (!source || source.id !== "older") return;
    var first = document.querySelector("#messages > article.message");
    olderAnchor = first ? {ctx: e.detail.ctx, element: first, top: first.getBoundingClientRect().top} : null;
    // History going in is not news: keep screen readers from announcing it.
    var list = document.getElementById("messages");
    if (olderAnchor && list.getAttribute("aria-live") !== "off") {
      olderAnchor.live = list.getAttribute("aria-live");
      list.setAttribute("aria-live", "off");
    }
  });
  // (htmx 4 fires after:request before the swap; after:swap once it is all in.)
  document.addEventListener("htmx:after:swap", function (e) {
    if (!olderAnchor || e.detail.ctx !== olderAnchor.ctx) return;
    if (olderAnchor.element.isConnected) {
      window.scrollBy(0, olderAnchor.element.getBoundingClientRect().top - olderAnchor.top);
    }
    if (olderAnchor.live) {
      var live = olderAnchor.live;
      // Restored once the insertion has been seen as a quiet change.
      setTimeout(function () { document.getElementById("messages").setAttribute("aria-live", live); }, 0);
    }
    olderAnchor = null;
  });

  // Open at the newest message now, before htmx starts watching the link to
  // older messages at the top (it would otherwise load them on every visit).
  window.scrollTo(0, document.body.scrollHeight);

  window.addEventListener("DOMContentLoaded", markMine);
  window.addEventListener("load", function () { window.scrollTo(0, document.body.scrollHeight); });
})();
