"""The Stack Exchange dump reader: rows, bad rows, broken structure, compression."""

from __future__ import annotations

import bz2
import gzip
import io
from collections import Counter

import py7zr
import pytest
from dump_helpers import BOM, COMMENTS, DECLARATION, POSTS, dump_bytes, read_comments, read_posts, row, write_dump

from sobert_trainer.data.dump import DumpFormatError, RowStats, iter_posts, iter_rows, open_dump

GOOD = row(Id=1, PostTypeId=1, Title="First", Body="<p>one</p>")
GOOD2 = row(Id=2, PostTypeId=2, ParentId=1, Body="<p>two</p>")


# -- the fixtures themselves -------------------------------------------------------------------


def test_fixture_posts_are_read_completely():
    rows, stats = read_posts(POSTS)
    assert stats.rows == 40 and stats.bad_total == 0
    assert len(rows) == 40
    assert Counter(r["PostTypeId"] for r in rows) == {"1": 14, "2": 24, "4": 1, "5": 1}
    ids = [int(r["Id"]) for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_fixture_posts_attributes_are_unescaped():
    rows = {r["Id"]: r for r in read_posts(POSTS)[0]}
    question = rows["34"]
    assert question["Title"] == "Escape < and & when building HTML by hand"
    assert question["Tags"] == "<python><html><escaping>"
    assert question["AcceptedAnswerId"] == "35"
    # &#xA; becomes a real newline; &amp;lt; stays an HTML entity for the HTML stage to decode
    body = rows["35"]["Body"]
    assert body.startswith("<p>Use <code>html.escape</code>")
    assert "\n<pre><code>&gt;&gt;&gt; import html\n" in body
    assert rows["24"]["Body"] == ""  # the empty-body question is a row like any other here
    assert rows["37"]["ParentId"] == "999"  # the orphan answer


def test_fixture_posts_are_consistent():
    rows = read_posts(POSTS)[0]
    questions = {r["Id"]: r for r in rows if r["PostTypeId"] == "1"}
    answers = [r for r in rows if r["PostTypeId"] == "2"]
    orphans = [a["Id"] for a in answers if a["ParentId"] not in questions]
    assert orphans == ["37"]
    per_question = Counter(a["ParentId"] for a in answers)
    for qid, question in questions.items():
        assert int(question["AnswerCount"]) == per_question[qid]
        if "AcceptedAnswerId" in question:
            accepted = next(a for a in answers if a["Id"] == question["AcceptedAnswerId"])
            assert accepted["ParentId"] == qid
    comments = read_comments(COMMENTS)[0]
    per_post = Counter(c["PostId"] for c in comments)
    for post in rows:
        assert int(post["CommentCount"]) == per_post[post["Id"]], post["Id"]


def test_fixture_files_are_in_dump_format():
    for path, root in ((POSTS, "posts"), (COMMENTS, "comments")):
        data = path.read_bytes()
        assert data.startswith(BOM + DECLARATION.encode() + b"\n" + f"<{root}>\n".encode())
        assert data.endswith(f"</{root}>\n".encode())
        assert len(data) < 40_000
        body = data.decode("utf-8").splitlines()[2:-1]
        assert body and all(line.startswith("  <row ") and line.endswith(" />") for line in body)


def test_fixture_comments_are_read_completely():
    comments, stats = read_comments(COMMENTS)
    assert stats.rows == len(comments) == 31 and stats.bad_total == 0
    assert {"Id", "PostId", "Score", "Text", "CreationDate", "UserId"} <= set(comments[0])
    texts = [c["Text"] for c in comments]
    assert sum("deprecated since version" in t for t in texts) >= 2
    assert any("no longer works in Python 3.12" in t for t in texts)
    assert any("&" in t for t in texts) and any('"' in t for t in texts)  # entities decoded


# -- bad rows are counted and skipped ----------------------------------------------------------


def test_bad_rows_are_counted_and_skipped(tmp_path):
    path = write_dump(
        tmp_path / "site-Posts.xml",
        "posts",
        [
            GOOD,
            '  <row Id="10" PostTypeId="1" Body="unclosed quote />',
            b'  <row Id="11" PostTypeId="1" Body="caf\xe9 latin-1, not utf-8" />',
            row(Id=12, Body="<p>no type</p>"),
            row(Id=13, PostTypeId="  ", Body="<p>blank type</p>"),
            row(PostTypeId=1, Body="<p>no id</p>"),
            '  <row Id="14" PostTypeId="1" Body="a &nbsp; b" />',  # undeclared XML entity
            GOOD2,
        ],
    )
    rows, stats = read_posts(path)
    assert [r["Id"] for r in rows] == ["1", "2"]
    assert stats.rows == 8
    assert stats.bad == {"malformed xml": 2, "invalid utf-8": 1, "missing PostTypeId": 2, "missing Id": 1}
    assert stats.bad_total == 6
    assert stats.as_dict() == {
        "rows": 8,
        "bad": {"invalid utf-8": 1, "malformed xml": 2, "missing Id": 1, "missing PostTypeId": 2},
        "bad_total": 6,
    }


def test_comment_rows_need_post_id_and_text(tmp_path):
    path = write_dump(
        tmp_path / "site-Comments.xml",
        "comments",
        [
            row(Id=1, PostId=5, Score=0, Text="fine"),
            row(Id=2, PostId=5, Score=0, Text=""),
            row(Id=3, Score=0, Text="orphan text"),
            row(Id=4, PostId=6, Text="also fine"),
        ],
    )
    comments, stats = read_comments(path)
    assert [c["Id"] for c in comments] == ["1", "4"]
    assert stats.bad == {"missing Text": 1, "missing PostId": 1}
    assert stats.rows == 4


def test_rows_may_close_with_an_end_tag_or_span_lines(tmp_path):
    path = write_dump(
        tmp_path / "site-Posts.xml",
        "posts",
        [
            '  <row Id="1" PostTypeId="1" Body="x"></row>',
            '  <row Id="2"',
            '       PostTypeId="2" ParentId="1" />',
            GOOD2,
        ],
    )
    rows, stats = read_posts(path)
    assert [(r["Id"], r["PostTypeId"]) for r in rows] == [("1", "1"), ("2", "2"), ("2", "2")]
    assert stats.rows == 3 and stats.bad_total == 0


def test_row_stats_merge():
    first, second = RowStats(rows=3), RowStats(rows=2)
    first.bad["malformed xml"] += 1
    second.bad["malformed xml"] += 2
    second.bad["invalid utf-8"] += 1
    first.merge(second)
    assert first.rows == 5
    assert first.bad == {"malformed xml": 3, "invalid utf-8": 1}
    assert first.bad_total == 4


# -- broken structure raises with the file and line --------------------------------------------


def _raw(*lines: str | bytes) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n"


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        pytest.param(
            _raw(DECLARATION, "<posts>", GOOD, "stray text here", GOOD2, "</posts>"),
            4,
            "unexpected content",
            id="text-outside-rows",
        ),
        pytest.param(_raw(DECLARATION, "<posts>", GOOD, "", GOOD2), 5, "file ends before </posts>", id="truncated"),
        pytest.param(_raw(DECLARATION, GOOD, "</posts>"), 2, "<row> before the <posts> root", id="row-before-root"),
        pytest.param(
            _raw(DECLARATION, "<comments>", "</comments>"), 2, "expected the <posts> root element", id="wrong-root"
        ),
        pytest.param(_raw(DECLARATION, "<posts>", GOOD, "</posts>", GOOD2), 5, "<row>", id="row-after-root"),
        pytest.param(
            _raw(DECLARATION, "<posts>", '  <row Id="1" PostTypeId="1"'),
            3,
            "file ends inside a <row>",
            id="ends-inside-row",
        ),
    ],
)
def test_broken_structure_names_file_and_line(tmp_path, data, line, words):
    path = tmp_path / "broken-Posts.xml"
    path.write_bytes(data)
    with pytest.raises(DumpFormatError) as caught:
        read_posts(path)
    message = str(caught.value)
    assert f"{path}:{line}:" in message
    assert words in message


@pytest.mark.parametrize(
    "data",
    [b"", BOM, _raw(DECLARATION), _raw(DECLARATION, "", "   ")],
    ids=["empty", "bom-only", "declaration-only", "blank-lines"],
)
def test_file_without_root_element(tmp_path, data):
    path = tmp_path / "empty-Posts.xml"
    path.write_bytes(data)
    with pytest.raises(DumpFormatError, match="no <posts> root element") as caught:
        read_posts(path)
    assert str(path) in str(caught.value)


def test_rows_before_a_structural_error_are_streamed(tmp_path):
    """Rows are yielded as they are read; the error comes when the break is reached."""
    path = tmp_path / "cut-Posts.xml"
    path.write_bytes(_raw(DECLARATION, "<posts>", GOOD, GOOD2))
    seen = []
    stats = RowStats()
    with pytest.raises(DumpFormatError, match=r":4: file ends before </posts>"):
        for item in iter_posts(str(path), stats):
            seen.append(item["Id"])
    assert seen == ["1", "2"] and stats.rows == 2


def test_empty_root_is_a_valid_dump(tmp_path):
    path = write_dump(tmp_path / "site-Posts.xml", "posts", [])
    rows, stats = read_posts(path)
    assert rows == [] and stats.rows == 0


def test_iter_rows_on_a_stream():
    stats = RowStats()
    stream = io.BytesIO(dump_bytes("comments", [row(Id=7, PostId=1, Text="hi")]))
    rows = list(iter_rows(stream, "mem", "comments", ("Id", "PostId", "Text"), stats))
    assert rows == [{"Id": "7", "PostId": "1", "Text": "hi"}]
    with pytest.raises(DumpFormatError, match=r"^mem:2: expected the <posts> root"):
        list(iter_rows(io.BytesIO(dump_bytes("comments", [])), "mem", "posts", ("Id",), RowStats()))


# -- encodings, line endings, compression ------------------------------------------------------


def test_bom_and_crlf_are_handled(tmp_path):
    expected = read_posts(POSTS)[0]
    plain = POSTS.read_bytes()
    assert plain.startswith(BOM)
    variants = {
        "nobom-Posts.xml": plain[len(BOM) :],
        "crlf-Posts.xml": plain.replace(b"\n", b"\r\n"),
        "crlf-nobom-Posts.xml": plain[len(BOM) :].replace(b"\n", b"\r\n"),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        rows, stats = read_posts(tmp_path / name)
        assert rows == expected, name
        assert stats.rows == 40 and stats.bad_total == 0


def test_crlf_line_numbers(tmp_path):
    path = tmp_path / "crlf-Posts.xml"
    path.write_bytes(dump_bytes("posts", [GOOD, "oops", GOOD2], newline=b"\r\n"))
    with pytest.raises(DumpFormatError, match=r":4: unexpected content 'oops'"):
        read_posts(path)


def test_compressed_inputs_yield_the_same_rows(tmp_path):
    expected = read_posts(POSTS)[0]
    data = POSTS.read_bytes()
    gz = tmp_path / "example.stackexchange.com-Posts.xml.gz"
    gz.write_bytes(gzip.compress(data))
    bz = tmp_path / "example.stackexchange.com-Posts.xml.bz2"
    bz.write_bytes(bz2.compress(data))
    upper = tmp_path / "example.stackexchange.com-Posts.XML.GZ"
    upper.write_bytes(gzip.compress(data))
    for path in (gz, bz, upper):
        rows, stats = read_posts(path)
        assert rows == expected, path.name
        assert stats.rows == 40
    with open_dump(str(gz)) as stream:
        assert stream.read() == data


def test_7z_input_yields_the_same_rows(tmp_path):
    archive = tmp_path / "example.stackexchange.com-Posts.7z"
    with py7zr.SevenZipFile(archive, "w") as out:
        out.write(POSTS, "Posts.xml")
    rows, stats = read_posts(archive)
    assert rows == read_posts(POSTS)[0]
    assert stats.rows == 40


def test_7z_with_several_xml_members_is_refused(tmp_path):
    archive = tmp_path / "site.7z"
    with py7zr.SevenZipFile(archive, "w") as out:
        out.write(POSTS, "Posts.xml")
        out.write(COMMENTS, "Comments.xml")
    with pytest.raises(DumpFormatError, match=r"expected one \.xml member") as caught:
        read_posts(archive)
    assert str(archive) in str(caught.value)


def test_compressed_bad_rows_are_counted(tmp_path):
    path = tmp_path / "site-Posts.xml.gz"
    path.write_bytes(gzip.compress(dump_bytes("posts", [GOOD, b'  <row Id="3" PostTypeId="1" Body="\xff" />', GOOD2])))
    rows, stats = read_posts(path)
    assert [r["Id"] for r in rows] == ["1", "2"]
    assert stats.bad == {"invalid utf-8": 1}


# -- regressions for rows cut off mid-line and odd roots ------------------------------------------


def test_cut_off_row_is_one_bad_row_and_never_swallows_the_next(tmp_path):
    cut = '<row Id="1" PostTypeId="1" Body="&lt;p&gt;x'  # no closing quote, no "/>"
    good = row(Id=2, PostTypeId=1, Title="T", Body="<p>y</p>")
    rows, stats = read_posts(write_dump(tmp_path / "a-Posts.xml", "posts", [cut, good]))
    assert [r["Id"] for r in rows] == ["2"]
    assert stats.rows == 2 and stats.bad == Counter({"malformed xml": 1})
    rows, stats = read_posts(write_dump(tmp_path / "b-Posts.xml", "posts", [good, cut]))  # last before </posts>
    assert [r["Id"] for r in rows] == ["2"] and stats.bad == Counter({"malformed xml": 1})


def test_row_after_the_closing_root_names_that(tmp_path):
    path = tmp_path / "c-Posts.xml"
    path.write_bytes(dump_bytes("posts", []) + row(Id=1, PostTypeId=1, Body="<p>x</p>").encode() + b"\n")
    with pytest.raises(DumpFormatError, match=r"c-Posts.xml:4: <row> after </posts>"):
        read_posts(path)


def test_self_closing_root_is_an_empty_dump(tmp_path):
    path = tmp_path / "d-Posts.xml"
    path.write_bytes(BOM + DECLARATION.encode() + b"\n<posts />\n")
    rows, stats = read_posts(path)
    assert rows == [] and stats.rows == 0
