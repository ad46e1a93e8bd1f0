"""Markdown is sanitized, user text is escaped, fragments are lean."""
from markupsafe import Markup

from chat.render.rendering import append_fragment
from chat.render.rendering import ops_fragment
from chat.render.rendering import render_markdown
from chat.render.rendering import upsert
from support.body import Body


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
    html = render_markdown("| a | b | c |\n|:-|-:|:-:|\n| 1 | 2 | 3 |\n")
    assert "<table>" in html and "<td" in html
    # Alignment is a class: the page's Content-Security-Policy refuses inline style.
    assert "style=" not in html
    assert '<th class="align-left">a</th>' in html and '<td class="align-right">2</td>' in html
    assert '<td class="align-center">3</td>' in html


def test_append_fragment_escapes_and_targets_the_body():
    frag = append_fragment(7, "<b>x</b> & y")
    assert frag == '<i hx-swap-oob="beforeend:#message-7-body">&lt;b&gt;x&lt;/b&gt; &amp; y</i>'


def test_a_piece_names_the_reply_and_each_operation_in_a_few_bytes():
    ops = [("extend", 2, " more"), ("append", "<p>Next</p>"), ("drop", 3)]
    assert ops_fragment(12, ops) == "+12\x1f2  more\x1f0 <p>Next</p>\x1f-3 "
    # Nothing to change still makes a frame: every committed chunk has its event.
    assert ops_fragment(12, []) == "+12\x1f0 "


def test_html_holding_the_separator_goes_as_out_of_band_swaps():
    fragment = ops_fragment(12, [("extend", 1, "a\x1fb")])
    assert fragment == '<i hx-swap-oob="append:#message-12-body >:last-child">a\x1fb</i>'
    body = Body(12, "<p>x</p>")
    body.apply(str(fragment))
    assert body.html == "<p>xa\x1fb</p>"


def test_upsert_wraps_articles_and_escapes_plain_text():
    assert upsert(Markup("<article id='m'></article>")) == (
        "<hx-upsert hx-target=\"#messages\" sort><article id='m'></article></hx-upsert>"
    )
    assert "&lt;b&gt;" in upsert("<b>")
