"""Markdown is sanitized, user text is escaped, fragments are lean."""
from markupsafe import Markup

from rendering import append_fragment
from rendering import render_markdown
from rendering import sse_event
from rendering import sse_text
from rendering import upsert


def test_markdown_renders_lists_code_and_emphasis():
    html = render_markdown("Hi **there**\n\n- one\n- two\n\n```python\nx = 1 < 2\n```\n")
    assert "<strong>there</strong>" in html
    assert "<ul>\n<li>one</li>" in html
    # Highlighted on the server: Pygments' token classes, text still escaped.
    assert '<pre><code class="language-python"><span class="n">x</span>' in html
    assert '<span class="o">&lt;</span> <span class="mi">2</span>\n</code></pre>' in html


def test_raw_html_from_the_model_is_text_not_markup():
    html = render_markdown('<script>alert(1)</script> <img src=x onerror="alert(2)"> ok')
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert "onerror" not in html or "&lt;img" in html


def test_only_safe_links_survive_with_rel():
    html = render_markdown("[a](javascript:alert(1)) [b](https://example.com) [c](mailto:x@y.z) [d](data:text/html,hi)")
    assert 'href="javascript' not in html and 'href="data' not in html
    assert html.count("<a ") == 2
    assert '<a href="https://example.com" rel="nofollow noopener noreferrer">b</a>' in html
    assert 'href="mailto:x@y.z"' in html


def test_tables_render_and_style_is_limited():
    html = render_markdown("| a | b |\n|:-|-:|\n| 1 | 2 |\n")
    assert "<table>" in html and "<td" in html


def test_append_fragment_escapes_and_targets_the_body():
    frag = append_fragment(7, "<b>x</b> & y")
    assert frag == '<i hx-swap-oob="beforeend:#message-7-body">&lt;b&gt;x&lt;/b&gt; &amp; y</i>'


def test_sse_events_split_lines_and_escape_tokens():
    assert sse_event("a\nb") == "data: a\ndata: b\n\n"
    assert sse_event("x\r\ny", event="done") == "event: done\ndata: x\ndata: y\n\n"
    assert sse_text(" <i>") == "data:  &lt;i&gt;\n\n"


def test_upsert_wraps_articles_and_escapes_plain_text():
    assert upsert(Markup("<article id='m'></article>")) == (
        "<hx-upsert hx-target=\"#messages\" sort><article id='m'></article></hx-upsert>"
    )
    assert "&lt;b&gt;" in upsert("<b>")
