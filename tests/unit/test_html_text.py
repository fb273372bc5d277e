"""Post HTML to sentence segments, with code blocks kept whole and marked."""

from __future__ import annotations

import re

import pytest
from dump_helpers import POSTS, read_posts

from sobert_trainer.data.html_text import CODE_CLOSE, CODE_OPEN, html_to_segments, plain_segments


def code(text: str) -> str:
    return f"{CODE_OPEN}\n{text}\n{CODE_CLOSE}"


def test_code_markers():
    assert (CODE_OPEN, CODE_CLOSE) == ("[CODE]", "[/CODE]")


def test_block_code_is_one_segment_with_layout_kept():
    body = (
        "<p>Try this:</p>\n\n"
        "<pre><code>def f(xs):\n"
        "    for x in xs:\n"
        "        if x &lt; 0 and x != -1:\n"
        "            return x  # first. Negative\n"
        "\n"
        "    return None\n"
        "</code></pre>\n"
    )
    assert html_to_segments(body) == [
        "Try this:",
        code(
            "def f(xs):\n    for x in xs:\n        if x < 0 and x != -1:\n"
            "            return x  # first. Negative\n\n    return None"
        ),
    ]


def test_code_entities_are_decoded_once():
    body = "<pre><code>&lt;div class=&quot;a&quot;&gt;&amp;amp;&lt;/div&gt; &#39;q&#39; &#x41;</code></pre>"
    assert html_to_segments(body) == [code("<div class=\"a\">&amp;</div> 'q' A")]


def test_fixture_code_block_keeps_escaped_entities_literal():
    body = next(r["Body"] for r in read_posts(POSTS)[0] if r["Id"] == "35")
    segments = html_to_segments(body)
    assert segments[1] == code(
        ">>> import html\n>>> html.escape(\"Salt & Pepper <large>\")\n'Salt &amp; Pepper &lt;large&gt;'"
    )
    assert segments[0] == "Use `html.escape` from the standard library:"


def test_text_and_code_keep_their_order():
    body = "<p>Before.</p><pre><code>x = 1</code></pre><p>Between.</p><pre><code>y = 2</code></pre><p>After.</p>"
    assert html_to_segments(body) == ["Before.", code("x = 1"), "Between.", code("y = 2"), "After."]


def test_pre_without_code_and_blank_code_blocks():
    assert html_to_segments("<pre>  indented\nplain pre</pre>") == [code("  indented\nplain pre")]
    assert html_to_segments("<p>Only prose.</p><pre><code>\n   \n</code></pre>") == ["Only prose."]


def test_inline_code_gets_backticks():
    body = (
        "<p>Call <code>list.sort()</code> or <code>sorted(xs, key=len)</code> &amp; compare <code>a &lt; b</code>.</p>"
    )
    assert html_to_segments(body) == ["Call `list.sort()` or `sorted(xs, key=len)` & compare `a < b`."]


def test_tags_are_stripped_and_link_text_kept():
    body = (
        '<h2>Heading</h2><p>See <a href="https://example.org/guide" rel="nofollow">the <em>guide</em></a> '
        'and <strong>bold</strong> text.<img src="https://example.org/x.png" alt="diagram"></p>'
    )
    segments = html_to_segments(body)
    assert segments == ["Heading", "See the guide and bold text."]
    assert not any("<" in s or "href" in s or "example.org" in s for s in segments)


def test_entities_are_decoded():
    segments = html_to_segments("<p>Tom &amp; Jerry say &quot;hi&quot; &ndash; it&#39;s &copy; 2024 &gt; 2023</p>")
    assert segments == ['Tom & Jerry say "hi" \u2013 it\'s \u00a9 2024 > 2023']


def test_nbsp_entity_is_decoded():
    # in a dump the body attribute holds `&amp;nbsp;`, which XML turns into `&nbsp;`
    segments = html_to_segments("<p>Hello&nbsp;world</p>")
    assert len(segments) == 1
    assert "&nbsp;" not in segments[0] and "&" not in segments[0]
    assert re.fullmatch("Hello[\u00a0 ]world", segments[0])


def test_whitespace_is_normalised_in_prose():
    body = "<p>  lots   of\tspace\n   across\n lines  </p>\n\n\n<p>\n</p>"
    assert html_to_segments(body) == ["lots of space", "across", "lines"]


@pytest.mark.parametrize(
    ("prose", "expected"),
    [
        ("First one. Second one.", ["First one.", "Second one."]),
        ('Really? Yes! 3 cases. (Maybe) "quoted".', ["Really?", "Yes!", "3 cases.", '(Maybe) "quoted".']),
        ("Use e.g. this or i.e. that.", ["Use e.g. this or i.e. that."]),
        ("Version 3.12 broke it.", ["Version 3.12 broke it."]),
        ("See file.txt. Then run it.", ["See file.txt.", "Then run it."]),
    ],
)
def test_sentences_split_before_a_capital(prose, expected):
    assert html_to_segments(f"<p>{prose}</p>") == expected


def test_paragraphs_are_separate_segments():
    assert html_to_segments("<p>one</p><p>two</p><div>three</div>line<br>break<br/>again") == [
        "one",
        "two",
        "three",
        "line",
        "break",
        "again",
    ]


def test_unclosed_pre_keeps_its_text_as_code():
    assert html_to_segments("<p>Intro text</p><pre><code>x = 1\n  y = 2\n") == ["Intro text", code("x = 1\n  y = 2")]


def test_list_items_are_prefixed():
    body = "<p>Steps:</p>\n<ol>\n<li>Install it.</li>\n<li>Run <code>make</code></li>\n</ol>\n<ul><li>last</li></ul>"
    assert html_to_segments(body) == ["Steps:", "- Install it.", "- Run `make`", "- last"]


def test_blockquote_and_hr():
    body = "<blockquote>\n  <p>Quoted words.</p>\n</blockquote><hr /><p>Reply.</p>"
    assert html_to_segments(body) == ["Quoted words.", "Reply."]


def test_br_inside_code_is_a_line_break():
    assert html_to_segments("<pre><code>a = 1<br/>b = 2</code></pre>") == [code("a = 1\nb = 2")]


def test_plain_br_inside_code_is_a_line_break():
    # `<br>` without a slash inside code must break the code line, not leak into the prose
    assert html_to_segments("<p>Before</p><pre><code>a = 1<br>b = 2<br>\n</code></pre><p>After</p>") == [
        "Before",
        code("a = 1\nb = 2"),
        "After",
    ]


def test_empty_and_text_only_bodies():
    assert html_to_segments("") == []
    assert html_to_segments("just text, no tags") == ["just text, no tags"]


def test_every_fixture_body_converts():
    for post in read_posts(POSTS)[0]:
        segments = html_to_segments(post["Body"])
        assert all(s.strip() == s and s for s in segments if not s.startswith(CODE_OPEN)), post["Id"]
        for segment in segments:
            # no markup left, and entities decoded (post 35's code shows escaped HTML on purpose)
            assert "<p>" not in segment and "</code>" not in segment and "&gt;&gt;&gt;" not in segment
            if segment.startswith(CODE_OPEN):
                assert segment.endswith("\n" + CODE_CLOSE)
        assert sum(s.startswith(CODE_OPEN) for s in segments) == post["Body"].count("<pre>"), post["Id"]


def test_plain_segments():
    assert plain_segments("  Short title  ") == ["Short title"]
    assert plain_segments("It broke.\nThen   it worked. e.g. twice!  Ok") == [
        "It broke.",
        "Then it worked. e.g. twice!",
        "Ok",
    ]
    assert plain_segments("") == [] and plain_segments(" \n ") == []
