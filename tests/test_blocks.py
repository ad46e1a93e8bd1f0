"""Streaming Markdown by stable blocks: the splitter, the fragments observers
get per chunk, and the author's stream, on adversarial Markdown.

Every check is against a fresh render: whatever the chunking, a body that
applied the fragments in order must hold exactly what ``render_markdown``
draws for the text so far, and at the end for the whole reply.
"""
import random
import re

import pytest

from chat.render import blocks
from chat.render.diff import diff
from chat.render.diff import extension
from chat.render.rendering import chunk_fragment
from chat.render.rendering import grow_fragment
from chat.render.rendering import render_markdown
from chat.web.author_stream import AuthorBody
from support.body import Body
from support.body import apply_author_stream
from support.body import element_ends
from support.body import parse_sse

DOCS = {
    "paragraphs": "First paragraph, with *emphasis* and `code`.\n\nSecond one **bold** here.\nA lazy line.\n\nThird.",
    "bullet list split": "Intro:\n\n- one\n- two\n  continued\n- three\n\n  loose now\n- four\n\nAfter the list.",
    "ordered list": "1. first\n2. second\n\n3. third\n\n10. tenth\n\nPara 1\n2. not a list here",
    "lazy continuation": "> quoted\nlazy line\n> more\n\n- item\nlazy too\n\nend",
    "setext": "Title\n=====\n\nSub\n---\n\nNot a heading\n- list\n\nFoo\n-\nbar",
    "atx then paragraph": "Para\n# Heading\nPara\n#not heading\n\n###### six\n####### seven",
    "table": "Intro text\n| a | b |\n|:--|--:|\n| 1 | 2 |\n| 3 | 4 |\n\n| x |\n|---|x\n\nAfter.",
    "table undone": "Para one\n| a | b |\n|-|-|x and more\n\nAfter.",
    "unterminated fence": "Code:\n\n```python\ndef f(x):\n    return x < 1\n",
    "fences": "```js\nlet a = 1;\n```\n\n~~~\nplain ~~~ text\n~~~\n\n````md\n```\ninner\n```\n````\n\n```py\nx = 1\n``` not closing\n```\nAfter.",
    "indented code": "Para\n\n    code one\n\n    code two\n\nback to para\n\n    tail code",
    "raw html": 'Hi <script>alert(1)</script> <img src=x onerror="alert(2)">\n\n<div onclick="x()">block</div>\n\n<iframe src="javascript:alert(3)"></iframe>',
    "links": "[a](javascript:alert(1)) [b](https://example.com) <javascript:alert(1)> [c](JaVaScRiPt:x)"
    " [d](data:text/html,hi) [e](mailto:x@y.z)\n\n[ref]: javascript:alert(2)\n\n[ref]",
    "emphasis across chunks": "Some **bold that spans a long stretch of words** and _under_ ~~gone~~ end.",
    "hr and quotes": "Para\n\n---\n\n> a\n>\n> b\n\n***\n___",
    "entities and escapes": "a &amp; b &lt; c &#x27; \\*not em\\* \\\n& < > \" ' done",
    "crlf": "Line one\r\nline two\r\n\r\n- a\r\n- b\r\n",
    "tabs and nul": "-\tindented\tlist\n\n\tcode\twith tab\n\nnul \x00 here",
    "math": "Euler: $e^{i\\pi}+1=0$ costs $5 and $10.\n\nArea:\n$$\nA = \\pi r^2\n$$\nAfter it.\n\n"
    "$$x$$ and $$y^2$$ inline\n\n- item $a_1$ and $\\frac{1}{2}$\n\n$ 5 $ is not math, nor 3$x$",
    "math closing late": "Formula:\n$$\n- x &= 1 \\\\\n# y\n> z\n| a |\n|---|\n$$\nDone.\n\nNext para.",
    "math never closed": "Open:\n$$\n\\frac{a}{b}\n- list\n\nnever closed $$ here\n\n$$\nbad \\frac{\n$$\n\nEnd $x",
}


def fresh(text):
    """Block HTML from a whole-text parse with every cache emptied."""
    blocks._block_html.clear()
    blocks._states.clear()
    return [html for _, _, html in blocks._parse(blocks.normalize(text))]


def chunkings(text, seed):
    """A few ways to cut ``text`` into chunks: every character, sentence-ish
    pieces, and random cuts."""
    rng = random.Random(seed)
    yield list(text)
    yield [piece for piece in re.split(r"(?<=[.!?\n])", text) if piece]
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
        yield [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


@pytest.mark.parametrize("name", sorted(DOCS))
def test_incremental_blocks_equal_a_fresh_parse_of_every_prefix(name):
    text = DOCS[name]
    expected = {n: fresh(text[:n]) for n in range(len(text) + 1)}
    blocks._states.clear()
    state = blocks.blocks_of("")
    for n in range(1, len(text) + 1):
        state = blocks.blocks_of(text[:n], base=state)
        assert list(state.html) == expected[n], "prefix {!r}".format(text[:n])


@pytest.mark.parametrize("name", sorted(DOCS))
def test_every_block_is_one_element(name):
    text = DOCS[name]
    for n in range(len(text) + 1):
        for html in fresh(text[:n]):
            assert len(element_ends(html)) == 1 and element_ends(html)[0] == len(html), html


@pytest.mark.parametrize("name", sorted(DOCS))
def test_observer_fragments_draw_every_prefix_and_end_equal_to_a_fresh_render(name):
    text = DOCS[name]
    for cut in chunkings(text, name):
        blocks._states.clear()
        body = Body(7)
        before = ""
        for chunk in cut:
            fragment = chunk_fragment(7, before, chunk)
            assert fragment.strip()
            body.apply(str(fragment))
            before += chunk
            assert body.html == str(render_markdown(before)), (cut, before)
        assert body.html == str(render_markdown(text))


@pytest.mark.parametrize("name", sorted(DOCS))
def test_author_stream_ends_equal_to_a_fresh_render(name):
    text = DOCS[name]
    for cut in chunkings(text, name + "!"):
        blocks._states.clear()
        author = AuthorBody(7)
        raw, so_far = "", ""
        for token in cut:
            so_far += token
            raw += author.advance(so_far)
        raw += author.advance(text, final=True)
        assert author.shows(text)
        body = Body(7)
        apply_author_stream(body, parse_sse(raw))
        assert body.html == str(render_markdown(text)), cut


def test_fragments_are_pure_functions_of_the_stored_text():
    text = DOCS["bullet list split"]
    pieces = ["Intro:\n\n- one\n- tw", "o\n  continued\n- three\n\n  loose", " now\n- four\n\nAfter the list."]
    first = []
    before = ""
    for piece in pieces:
        first.append(str(chunk_fragment(3, before, piece)))
        before += piece
    blocks._states.clear()
    blocks._block_html.clear()
    again = []
    before = ""
    for piece in reversed(pieces):  # other texts first: nothing depends on call order
        chunk_fragment(3, "", piece)
    for piece in pieces:
        again.append(str(chunk_fragment(3, before, piece)))
        before += piece
    assert first == again
    assert before == text


def test_a_list_split_across_chunks_grows_in_place():
    fragment = str(chunk_fragment(5, "- one\n- tw", "o\n- three"))
    # The second item gets its end, then a third item joins the list: no re-send.
    assert fragment == "+5\x1f2 o\x1f1 <li>three</li>\n"


def test_a_paragraph_grows_by_its_new_text_only():
    fragment = str(chunk_fragment(5, "Hello there. ", "How are you? "))
    assert fragment == "+5\x1f1  How are you?"


def test_finished_blocks_are_sent_once():
    def sent(paragraphs):
        text = "".join(
            "Paragraph number {} is here. It has **two** sentences.\n\n- item {}\n- and more\n\n".format(n, n)
            for n in range(paragraphs)
        )
        out, before = [], ""
        for chunk in re.split(r"(?<=\. )|(?<=\n)", text):
            if chunk:
                out.append(str(chunk_fragment(9, before, chunk)))
                before += chunk
        return "".join(out)

    forty, eighty = sent(40), sent(80)
    for n in range(80):
        assert eighty.count("Paragraph number {} ".format(n)) == 1
        assert eighty.count("item {}<".format(n)) == 1
    assert len(eighty) < 2.1 * len(forty), "bytes stay linear in the reply's length"


def test_an_unterminated_fence_renders_as_code_then_highlighted_when_closed():
    open_html = str(render_markdown("```python\ndef f():\n    return 1"))
    assert open_html == '<pre><code class="language-python">def f():\n    return 1</code></pre>'
    closed = str(render_markdown("```python\ndef f():\n    return 1\n```"))
    assert '<span class="k">def</span>' in closed and closed.startswith('<pre><code class="language-python">')
    # An open code block grows line by line in place.
    fragment = str(chunk_fragment(4, "```python\ndef f():\n", "    return 1\n"))
    assert fragment == "+4\x1f2     return 1\n"


def test_unknown_languages_and_huge_code_are_plain():
    assert "<span" not in str(render_markdown("```nosuchlang\nx = 1\n```"))
    big = "```python\n" + "x = 1\n" * 5000 + "```"
    assert "<span" not in str(render_markdown(big))


def test_no_raw_html_or_unsafe_link_reaches_any_fragment():
    for name in ("raw html", "links"):
        text = DOCS[name]
        before = ""
        for chunk in text:
            fragment = str(chunk_fragment(1, before, chunk))
            before += chunk
            bare = re.sub(r'</?(i|template)( hx-swap-oob="[^"]*")?>|\A\+\d+|\x1f-?\d+ ', "", fragment)
            assert not re.search(r"<(script|img|iframe|div)\b", bare), fragment
            assert "onerror=" not in bare.replace("onerror=&quot;", "") or "&lt;img" in bare
            for href in re.findall(r'href="([^"]*)"', bare):
                assert href.startswith(("https:", "mailto:")), href


def test_spans_carry_only_pygments_classes():
    html = str(render_markdown("```python\nx = 'a'\n```\n\n<span class=\"mine-only\">x</span>"))
    classes = set(re.findall(r'<span class="([^"]*)"', html))
    assert classes and all(re.fullmatch(r"[a-z0-9]{1,3}", c) for c in classes), classes
    assert '<span class="mine-only"' not in html and '&lt;span class="mine-only"&gt;' in html


def test_link_reference_definitions_stay_text():
    """A definition at the end would change a link drawn earlier."""
    html = str(render_markdown("See [docs].\n\n[docs]: https://example.com"))
    assert "<a " not in html and "[docs]" in html


# -- the quick way: growing the last line without parsing again ---------------

WORDS = [" word", " the", " café", ",", ".", "?", "!", " 42", "'s", ' "q"', " a-b", " 50%", " $5", " @me",
         " a/b", " {x}", " x^2", " a=b", " a+b", " #tag", " a|b", " a:b", "日本", " "]
MARKUP = ["\n", "\n\n", "- ", "* ", "1. ", "3) ", "> ", "# ", "```", "```py", "~~~", "`", "**", "*", "_", "~~",
          "\\", "&", "amp", ";", "#35", "<", ">", "[", "]", "(", ")", "http://x", "---", "===", "    ", "\t",
          "\n```\n", "\n~~~\n", "\n```py\n", "\n  ```\n",
          "\u00a0", "\u3000", "\r", "\x00", "\x1b", "|-|-|", " a | b", "  - ", "x_y", "a*b", "2024", "Word",
          "$", "$$", " $x^2$", "\n$$\n", "\\pi"]


def token_stream(seed, n=100, markup=0.2):
    """Prose tokens with Markdown (and junk) in between, the fast path's hard cases."""
    rng = random.Random(seed)
    return [rng.choice(MARKUP) if rng.random() < markup else rng.choice(WORDS) for _ in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_growing_the_last_line_draws_what_a_parse_draws(seed):
    """``blocks.grow`` adds to the last line without parsing: where it answers,
    its blocks equal a parse of the text (incremental and fresh) and its one
    addition equals what ``diff`` finds between the two states."""
    used = 0
    for markup in (0.05, 0.25, 0.6):
        text = ""
        state = blocks.blocks_of("", remember=False)
        for token in token_stream(seed, markup=markup):
            text += token
            grown = blocks.grow(state, state.text + token)
            parsed = blocks.blocks_of(text, base=state, remember=False)
            if grown is None:
                state = parsed
                continue
            used += 1
            after, depth, html = grown
            assert list(after.html) == list(parsed.html) == fresh(text), repr(text)
            expected = diff(state.html, parsed.html)
            if html.strip():
                assert expected == [("extend", depth, html)], repr(text)
            elif not html:
                assert expected == [], repr(text)
            state = after
    assert used > 50, "prose tokens take the quick way"


@pytest.mark.parametrize("seed", range(10))
def test_author_events_and_observer_fragments_are_the_same_the_quick_way(seed, monkeypatch):
    tokens = token_stream(seed, n=150, markup=0.15)
    cuts = [tokens[i:i + 9] for i in range(0, len(tokens), 9)]

    def run():
        blocks._states.clear()
        author, raw, text = AuthorBody(3), [], ""
        for token in tokens:
            text += token
            raw.append(author.advance(text))
        raw.append(author.advance(text, final=True))
        fragments, before = [], blocks.blocks_of("")
        text = ""
        for cut in cuts:
            fragment, before = grow_fragment(3, before, text, text + "".join(cut))
            text += "".join(cut)
            fragments.append(str(fragment))
        return raw, fragments

    quick = run()
    monkeypatch.setattr(blocks, "grow", lambda state, text: None)
    assert quick == run()


def test_a_long_paragraph_or_code_block_is_not_parsed_again_per_token(monkeypatch):
    parses = []
    real = blocks._parse
    monkeypatch.setattr(blocks, "_parse", lambda src: parses.append(len(src)) or real(src))
    words = [" word{}".format(n % 50) for n in range(3000)]
    for start, end in (("Intro.\n\nA", "."), ("```python\nx = [", "]\n```")):
        parses.clear()
        author = AuthorBody(1)
        text = start
        author.advance(text)
        for word in words:
            text += word
            author.advance(text)
        assert len(parses) <= 3, "one parse per token would make a long block quadratic"
        text += end
        author.advance(text, final=True)
        assert author.shows(text)


def test_paragraphs_are_parsed_about_once_each(monkeypatch):
    """A blank line ends a paragraph for good: the next one is parsed without
    it, for the author's tokens and for observers' sentences alike."""
    parsed = []
    real = blocks._parse
    monkeypatch.setattr(blocks, "_parse", lambda src: parsed.append(len(src)) or real(src))
    paragraphs = [" ".join("word{}".format(n) for n in range(k, k + 40)) + "." for k in range(30)]
    text = "\n\n".join(paragraphs) + "\n\n"
    tokens = re.findall(r"\S+|\s+", text)

    author, so_far = AuthorBody(1), ""
    for token in tokens:
        so_far += token
        author.advance(so_far)
    assert sum(parsed) < 1.5 * len(text), "each paragraph parsed about once"

    parsed.clear()
    before, so_far = blocks.blocks_of(""), ""
    for sentence in re.split(r"(?<=\.\n\n)", text):
        fragment, before = grow_fragment(1, before, so_far, so_far + sentence)
        so_far += sentence
    assert sum(parsed) < 1.5 * len(text)
    assert "".join(before.html) == str(render_markdown(text))


@pytest.mark.parametrize("after", ["\n", "\n\n", "\n\n\n"])
def test_text_after_a_closed_fence_starts_a_new_block(after):
    code = "Para\n\n```python\ndef f():\n    return 1\n```" + after
    for text in (code + "That is all.", "~~~\nx\n~~~" + after + "Done"):
        start = text.index("That") if "That" in text else text.index("Done")
        author = AuthorBody(2)
        raw = author.advance(text[:start])
        body = Body(2)
        for n in range(start + 1, len(text) + 1):
            raw += author.advance(text[:n])
        apply_author_stream(body, parse_sse(raw))
        assert body.html == str(render_markdown(text))
        state = blocks.blocks_of(text[:start], remember=False)
        assert blocks.grow(state, text[:start + 1]) is None


def test_a_quoted_angle_bracket_never_splits_a_tag():
    # nh3 writes "<" and ">" inside attribute values as entities; were one
    # written raw, the slice sent to the page must still not start inside it.
    old = "<ul>\n<li>a</li>\n</ul>"
    title = 'q></x></li>\n<img src=x onerror=alert(1)><b><b>'
    new = '<ul>\n<li>a <a href="http://u" title="{}" rel="nofollow">t</a></li>\n<li>b</li>\n</ul>'.format(title)
    assert extension(old, new) == [
        (2, ' <a href="http://u" title="{}" rel="nofollow">t</a>'.format(title)),
        (1, "<li>b</li>\n"),
    ]
