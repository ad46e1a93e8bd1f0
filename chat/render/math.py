"""Math in replies: ``$…$`` inline and ``$$…$$`` on lines of their own,
drawn on the server as MathML (latex2mathml), which browsers show without a
script; sanitized with the rest of the body (markdown.py), from an
allow-list of MathML elements and attributes.

Dollar signs stay money where they look like money: no math across a digit
(``$5 and $10``), nor with a space just inside the dollars (``$ 5 $``), nor
across a blank line. LaTeX that cannot be converted is shown as written, in
code. A display block may also interrupt a paragraph (``Area:`` then
``$$``), as models write it.
"""
import functools
import re
from xml.etree import ElementTree

from latex2mathml.converter import convert
from markdown_it.common.utils import escapeHtml
from mdit_py_plugins.dollarmath.index import math_block_dollar

# Longer formulas are shown as their source (conversion is CPU bound).
MATH_LIMIT = 2_000

TAGS = {
    "math", "mrow", "mi", "mo", "mn", "ms", "mtext", "mspace", "msup", "msub", "msubsup", "mfrac",
    "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle", "mpadded",
    "mphantom", "menclose", "merror", "semantics", "annotation",
}
_PRESENTATION = {"mathvariant", "displaystyle", "scriptlevel"}
ATTRIBUTES = {
    "math": {"display", "xmlns"},
    "mo": {"stretchy", "fence", "form", "separator", "lspace", "rspace", "largeop", "movablelimits",
           "symmetric", "minsize", "maxsize", "accent"} | _PRESENTATION,
    "mi": _PRESENTATION,
    "mn": _PRESENTATION,
    "mtext": _PRESENTATION,
    "mstyle": _PRESENTATION,
    "mspace": {"width", "height", "depth"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mfrac": {"linethickness"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
    "mtable": {"columnalign", "rowalign", "rowspacing", "columnspacing", "columnlines", "rowlines", "frame"},
    "mtr": {"columnalign", "rowalign"},
    "mtd": {"columnalign", "rowalign", "columnspan", "rowspan"},
    "menclose": {"notation"},
    "annotation": {"encoding"},
}
CLASSES = {"math", "math-source"}


def _local(tag):
    return tag.rsplit("}", 1)[-1]


@functools.lru_cache(maxsize=512)
def to_mathml(latex, display):
    """MathML for ``latex`` (a ``math`` element), or its source in code when it
    cannot be converted."""
    if len(latex) <= MATH_LIMIT:
        try:
            mathml = convert(latex, display="block" if display else "inline")
            # Text in ``\\text{}`` comes out unescaped: what is not well-formed
            # MathML of known elements is shown as written instead.
            if all(_local(e.tag) in TAGS for e in ElementTree.fromstring(mathml).iter()):
                return mathml
        except Exception:  # noqa: BLE001 - any LaTeX it cannot read is shown as written
            pass
    dollars = "$$" if display else "$"
    return '<code class="math-source">{0}{1}{0}</code>'.format(dollars, escapeHtml(latex))


def _escaped(src, at):
    """True when an odd number of backslashes comes right before ``at``."""
    n = 0
    while at - n - 1 >= 0 and src[at - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _digit_at(src, at):
    return 0 <= at < len(src) and src[at].isdigit()


def math_inline(state, silent):
    """``$…$`` (and ``$$…$$``) inside a paragraph. As the plugin's own rule,
    except that it never looks before the text's start (the plugin's reads
    the paragraph's last character there, so whether math at the start of a
    paragraph is drawn would depend on how the paragraph ends)."""
    src, start = state.src, state.pos
    if src[start] != "$" or _digit_at(src, start - 1) or _escaped(src, start):
        return False
    double = src.startswith("$$", start)
    opening = 2 if double else 1
    if start + opening >= len(src) or src[start + opening].isspace():
        return False
    pos = start + opening
    while True:
        end = src.find("$$" if double else "$", pos)
        if end < 0:
            return False
        if not _escaped(src, end):
            break
        pos = end + 1
    content = src[start + opening:end]
    close = end + opening
    if not content or content[-1].isspace() or _digit_at(src, close):
        return False
    if not silent:
        token = state.push("math_inline_double" if double else "math_inline", "math", 0)
        token.content = content
        token.markup = src[start:start + opening]
    state.pos = close
    return True


def _inline(self, tokens, idx, options, env):
    return '<span class="math">{}</span>'.format(to_mathml(tokens[idx].content.strip(), False))


def _inline_display(self, tokens, idx, options, env):
    # ``$$…$$`` inside a paragraph: displayed, but phrasing content (a <div>
    # would end the paragraph when a browser parses it).
    return '<span class="math">{}</span>'.format(to_mathml(tokens[idx].content.strip(), True))


def _block(self, tokens, idx, options, env):
    return '<div class="math">{}</div>\n'.format(to_mathml(tokens[idx].content.strip(), True))


def _interrupting(rule):
    """A block rule that may also end a paragraph: the paragraph asks it in
    silent mode, which the plugin's rule does not honour (it always adds its
    token), so what it adds then is taken back."""

    def run(state, start, end, silent):
        if not silent:
            return rule(state, start, end, False)
        tokens, line = len(state.tokens), state.line
        found = rule(state, start, end, False)
        del state.tokens[tokens:]
        state.line = line
        return found

    return run


def use_math(md):
    """Teach ``md`` dollar math, drawn as MathML."""
    md.inline.ruler.before("escape", "math_inline", math_inline)
    block = math_block_dollar(allow_labels=False, allow_blank_lines=False)
    md.block.ruler.before("fence", "math_block", _interrupting(block), {"alt": ["paragraph", "blockquote", "list"]})
    md.add_render_rule("math_inline", _inline)
    md.add_render_rule("math_inline_double", _inline_display)
    md.add_render_rule("math_block", _block)


# A line that may open (or close) a display block.
_DISPLAY_LINE = re.compile(r"^ {0,3}\$\$", re.M)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def unsettled_from(src, end):
    """Where, up to ``end``, a display block may still take shape in ``src``
    (the start of its ``$$`` line), or None. A ``$$`` with no blank line after
    it may yet be closed, or its closing line (maybe the last, still growing)
    may yet change; either turns the lines from it on into one block, or back
    into text, and ends the paragraph it interrupts, or joins it: nothing
    from that paragraph on is final."""
    last = None
    for found in _DISPLAY_LINE.finditer(src):
        if found.start() > end:
            break
        last = found.start()
    if last is None or _BLANK_LINE.search(src, last):
        return None
    return last
