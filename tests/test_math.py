"""Math in replies: ``$…$`` and ``$$…$$`` drawn as sanitized MathML on the
server, dollars that look like money left alone, LaTeX that cannot be drawn
shown as written; and math growing while a reply streams draws what a fresh
render of the same text draws (test_blocks.py runs its prefixes too)."""
import re

import pytest

from chat.render import math
from chat.render.rendering import chunk_fragment
from chat.render.rendering import render_markdown
from support.body import Body


def html(text):
    return str(render_markdown(text))


def test_inline_and_display_math_become_mathml():
    out = html("Euler: $e^{i\\pi} + 1 = 0$.\n\n$$\n\\frac{a}{b} = \\sqrt{c}\n$$")
    assert out.startswith('<p>Euler: <span class="math"><math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">')
    assert "<msup><mi>e</mi><mrow><mi>i</mi><mi>π</mi></mrow></msup>" in out
    assert '<div class="math"><math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in out
    assert "<mfrac><mrow><mi>a</mi></mrow><mrow><mi>b</mi></mrow></mfrac>" in out and "<msqrt>" in out


def test_a_display_block_may_follow_its_sentence_without_a_blank_line():
    out = html("The area is:\n$$\nA = \\pi r^2\n$$\nwhere r is the radius.")
    assert re.fullmatch(r'<p>The area is:</p><div class="math"><math .*</math></div><p>where r is the radius\.</p>', out)


def test_double_dollars_inside_a_sentence_stay_in_its_paragraph():
    out = html("Both $$x^2$$ and $y$ here.")
    assert out.startswith("<p>Both <span class=\"math\"><math ") and 'display="block"' in out
    assert out.count("<math ") == 2 and "<div" not in out  # a <div> would end the paragraph in a browser


@pytest.mark.parametrize("text", [
    "It costs $5 and $10 now.",
    "Between $ 5 $ and $6.",
    "Not math: 3$x$ nor $x$4.",
    "Escaped \\$x\\$ dollars.",
    "A lone $ sign.",
    "$$\nnever closed\n\nand a blank line between $$",
])
def test_dollars_that_look_like_money_stay_text(text):
    assert "<math" not in html(text)


def test_latex_that_cannot_be_drawn_is_shown_as_written():
    out = html("Broken $\\begin{nothing}$ and $\\text{a<b & c}$ here.")
    assert "<math" not in out
    assert '<code class="math-source">$\\begin{nothing}$</code>' in out
    assert '<code class="math-source">$\\text{a&lt;b &amp; c}$</code>' in out
    huge = "$" + "x+" * (math.MATH_LIMIT // 2 + 1) + "x$"
    assert '<code class="math-source">' in html(huge)


@pytest.mark.parametrize("latex", [
    "\\text{<script>alert(1)</script>}",
    "\\text{</math></span><img src=x onerror=alert(1)>}",
    "\\href{javascript:alert(1)}{click}",
    "\\style{background:url(https://evil.example)}{x}",
    "\\color{red}{x} \\mathcolor{red}{y}",
])
def test_math_never_carries_markup_links_or_styles(latex):
    for text in ("Try ${}$ now.".format(latex), "$$\n{}\n$$".format(latex)):
        out = html(text)
        assert not re.search(r"<(?!/?(?:p|span|div|code|math|m[a-z]+|semantics|annotation)\b)", out), out
        assert not re.search(r"<[^>]*\s(?:href|style|on\w+|src|mathcolor|mathbackground)=", out), out
        assert not re.search(r"<[^>]*javascript:", out), out


def test_math_grows_in_place_for_observers_and_ends_as_a_fresh_render():
    text = "Energy is $E = mc^2$, famously.\n\nThe sum:\n$$\n\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}\n$$\nDone, at $5 a copy."
    for size in (1, 3, 7, 20):
        body = Body(3)
        before = ""
        for start in range(0, len(text), size):
            chunk = text[start:start + size]
            body.apply(str(chunk_fragment(3, before, chunk)))
            before += chunk
            assert body.html == html(before), repr(before)
    assert body.html.count("<math ") == 2 and "$5 a copy" in body.html
