// The page's small glue around htmx: where the author's stream swaps, what the
// socket asks for on each (re)connect, and the composer's keyboard and focus;
// then, reading the page: scrolling, timestamps and what screen readers hear.
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

  // A piece grows a reply's body by the blocks it changes (rendering.piece):
  // "+<id>", then per operation a U+001F and "<depth> <html>" (add the HTML at
  // the end of the last element <depth> levels below the body) or "-<k> "
  // (remove the body's blocks from the k-th on). Observers get one per
  // committed sentence, so its framing is a few bytes where an out-of-band
  // swap names its target in fifty. The HTML is the server's sanitized
  // Markdown (no htmx attributes to process), parsed in the context of the
  // element it goes into, so table rows land in a table body. An operation
  // whose element is not there (a page out of step) changes nothing, as an
  // out-of-band swap with no target would not; the next snapshot heals it.
  function isPiece(data) {
    return typeof data === "string" && data.charAt(0) === "+";
  }
  function applyPiece(data) {
    var ops = data.split("\x1f");
    if (!/^\+[0-9]{1,18}$/.test(ops[0])) return;
    var body = document.getElementById("message-" + ops[0].slice(1) + "-body");
    if (!body) return;
    for (var i = 1; i < ops.length; i++) {
      var space = ops[i].indexOf(" ");
      var code = ops[i].slice(0, space);
      var html = ops[i].slice(space + 1);
      if (space < 0 || !/^-?[0-9]{1,3}$/.test(code)) continue;  // not an operation this page knows
      if (code.charAt(0) === "-") {
        var keep = parseInt(code.slice(1), 10);
        while (body.children.length > keep) body.lastElementChild.remove();
        continue;
      }
      var target = body;
      for (var depth = parseInt(code, 10); depth > 0 && target; depth--) target = target.lastElementChild;
      if (target && html) target.insertAdjacentHTML("beforeend", html);
    }
  }
  document.addEventListener("htmx:ws:before:message:incoming", function (e) {
    if (!isPiece(e.detail.message.data)) return;
    e.detail.cancelled = true;  // applied here: hx-ws must not swap it as HTML
    applyPiece(e.detail.message.data);
  });
  document.addEventListener("htmx:sse:before:message", function (e) {
    if (e.detail.message.event || !isPiece(e.detail.message.data)) return;
    e.detail.cancelled = true;
    applyPiece(e.detail.message.data);
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

  // The composer: clear after a successful send, keep focus; Enter sends,
  // Shift+Enter adds a line.
  function composerSent(form) {
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
  function refusedText(source, status) {
    var composer = source && source.closest && source.closest("#composer");
    var kept = composer ? " Your message was not sent; it is still here." : "";
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
    var composer = ctx.sourceElement && ctx.sourceElement.closest && ctx.sourceElement.closest("#composer");
    var slot = errorSlot(ctx.sourceElement);
    if (slot) {
      slot.textContent = "Could not reach the server. Check your connection and try again." +
        (composer ? " Your message was not sent; it is still here." : "");
    }
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

  window.addEventListener("DOMContentLoaded", markMine);
})();

// Reading the page: follow new text only while the reader is at the bottom,
// relative timestamps, and what screen readers hear. Every change to the
// message list (the asker's own tokens, the socket's sentences and snapshots,
// the final swap) is seen here through one MutationObserver, whatever carried it.
(function () {
  "use strict";

  var list = null;       // #messages
  var newButton = null;  // #new-messages: "something arrived below"
  var announcer = null;  // the polite region that receives whole sentences

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

  // -- what screen readers hear --------------------------------------------------
  // The message list is a polite live region: a new message is read out whole.
  // A reply is not read from the list (it grows token by token for the asker,
  // and its article is swapped when it ends); its text goes to a separate
  // polite announcer instead, a whole sentence (or list item, or code line) at
  // a time, and the rest when it ends. A reply streaming is also aria-busy.
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
  function speak(article) {
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
    showTimes(article);
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
    var bound = oldest;
    records.forEach(function (record) {
      var target = record.target.nodeType === 1 ? record.target : record.target.parentElement;
      if (!target || !target.closest("#messages") || target.closest("time")) return;
      record.removedNodes.forEach(function (node) {
        if (lastFocus && node.nodeType === 1 && node.matches("article.message") && node.contains(lastFocus)) lostFocus = node.id;
      });
      record.addedNodes.forEach(function (node) {
        articlesIn(node).forEach(function (article) {
          if (isHistory(article, bound) && !replies.has(article.id)) {
            replies.set(article.id, {said: bodyText(article), done: article.dataset.status !== "streaming", named: true});
          }
          prepare(article, bound);
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
    announcer = document.createElement("div");
    announcer.id = "announcer";
    announcer.className = "visually-hidden";
    announcer.setAttribute("aria-live", "polite");
    document.body.appendChild(announcer);

    showTimes(document.body);  // the room list's times too
    list.querySelectorAll("article.message").forEach(function (article) {
      prepare(article, -Infinity);
      if (article.dataset.role === "assistant") {
        var streaming = article.dataset.status === "streaming";
        replies.set(article.id, {said: bodyText(article), done: !streaming, named: !streaming});
      }
    });
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
})();
