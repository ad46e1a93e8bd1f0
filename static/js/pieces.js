// Pieces: how a reply's body grows on a page, from the socket (observers,
// one per committed sentence) and from the asker's own stream alike.
// A piece grows a reply's body by the blocks it changes (chat.render.rendering.piece):
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
