"""Markdown to sanitized HTML: markdown-it with raw HTML off and link
reference definitions off (a definition at the end would change a link drawn
at the start), tables with their alignment as classes, fenced code coloured
by Pygments (up to ``HIGHLIGHT_LIMIT`` characters), dollar math as MathML
(math.py), then nh3 keeping a small allow-list of tags, attributes, classes
and link schemes."""
import re

import nh3
from markdown_it import MarkdownIt
from markdown_it.utils import OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from chat.render import math

# Code longer than this is shown without colours (highlighting is CPU bound).
HIGHLIGHT_LIMIT = 20_000

_ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "ul", "div",
} | math.TAGS
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
    **math.ATTRIBUTES,
}
# Only the token classes Pygments writes may reach the page on a span
# (nh3 then adds "class" to the span's allowed attributes itself).
_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code, lang, attrs):
    """Pygments spans for a fenced block with a known language, else '' (plain)."""
    if not lang or len(code) > HIGHLIGHT_LIMIT:
        return ""
    try:
        lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


MD = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
)
MD.enable(["table", "strikethrough"])
MD.disable(["reference"])
math.use_math(MD)

_default_fence = MD.renderer.rules["fence"]
_plain_options = OptionsDict(dict(MD.options.items()))
_plain_options["highlight"] = None
CLOSING_FENCE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})[ \t]*\n?\Z")


def _fence(self, tokens, idx, options, env):
    """Highlight a code block only once its closing fence is there: while it is
    open, its last line grows as plain text (cheap to extend in place)."""
    if not tokens[idx].meta.get("closed"):
        options = _plain_options
    return _default_fence(tokens, idx, options, env)


MD.add_render_rule("fence", _fence)

# A column's alignment as a class: the page's Content-Security-Policy allows
# no inline style, so markdown-it's style="text-align:..." would be refused.
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}


def _align_classes(state):
    for token in state.tokens:
        if token.type not in ("th_open", "td_open") or not token.attrs:
            continue
        style = token.attrs.pop("style", "")
        if style.startswith("text-align:"):
            token.attrs["class"] = "align-" + style[len("text-align:"):]


MD.core.ruler.push("align_classes", _align_classes)


_CLEAN_OPTIONS = dict(
    tags=_ALLOWED_TAGS,
    attributes=_ALLOWED_ATTRIBUTES,
    url_schemes={"http", "https", "mailto"},
    link_rel="nofollow noopener noreferrer",
    allowed_classes={
        "span": _TOKEN_CLASSES | math.CLASSES, "div": math.CLASSES,
        "td": _ALIGN_CLASSES, "th": _ALIGN_CLASSES,
    },
)
# One sanitizer built once: ``nh3.clean`` builds its rules again on every call,
# which costs more than cleaning a paragraph.
_clean = nh3.Cleaner(**_CLEAN_OPTIONS).clean if hasattr(nh3, "Cleaner") else None


def sanitize(html):
    """No raw HTML, only http(s)/mailto links, only Pygments' and math's classes, only MathML's own elements."""
    if _clean is None:
        return nh3.clean(html, **_CLEAN_OPTIONS)
    return _clean(html)


def normalize(text):
    """Line endings as the parser sees them (a prefix stays a prefix)."""
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
