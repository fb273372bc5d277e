"""Dump rows to documents: per post or per thread, with comments attached."""

from __future__ import annotations

import pytest
from dump_helpers import COMMENTS, POSTS, SITE, html, read_comments, read_posts, row, write_dump

from sobert_trainer.data.documents import (
    Document,
    DocumentStats,
    iter_documents,
    pair_comments,
    post_segments,
    site_of,
)
from sobert_trainer.data.dump import RowStats
from sobert_trainer.data.html_text import CODE_OPEN, plain_segments


def build(posts, comments, unit, workdir, min_chars=0):
    stats = DocumentStats(RowStats(), RowStats())
    docs = list(iter_documents([str(p) for p in posts], [str(c) for c in comments], unit, workdir, stats, min_chars))
    return docs, stats


def by_id(docs: list[Document]) -> dict[str, Document]:
    return {d.id: d for d in docs}


def comment_segments(*comment_ids: int) -> list[str]:
    comments = {c["Id"]: c["Text"] for c in read_comments(COMMENTS)[0]}
    return [s for cid in comment_ids for s in plain_segments(comments[str(cid)])]


def body_segments(post_id: int) -> list[str]:
    post = next(r for r in read_posts(POSTS)[0] if r["Id"] == str(post_id))
    return post_segments(post)


# -- post documents ----------------------------------------------------------------------------


def test_post_mode_one_document_per_question_and_answer(tmp_path):
    docs, stats = build([POSTS], [COMMENTS], "post", tmp_path / "work")
    usable = [r["Id"] for r in read_posts(POSTS)[0] if r["PostTypeId"] in "12" and r["Id"] != "24"]
    assert [d.id for d in docs] == [f"{SITE}/post-{i}" for i in usable]
    assert len(docs) == 37 == stats.documents
    assert stats.skipped == {"post type 4": 1, "post type 5": 1}
    assert stats.posts.bad == {"empty body": 1}
    assert stats.posts.rows == 40 and stats.comments.rows == 31
    assert stats.as_dict() == {
        "posts": {"rows": 40, "bad": {"empty body": 1}, "bad_total": 1},
        "comments": {"rows": 31, "bad": {}, "bad_total": 0},
        "documents": 37,
        "skipped": {"post type 4": 1, "post type 5": 1},
    }
    assert not (tmp_path / "work" / "documents.sqlite").exists()


def test_question_document_layout(tmp_path):
    doc = by_id(build([POSTS], [COMMENTS], "post", tmp_path)[0])[f"{SITE}/post-1"]
    assert doc.segments[:3] == [
        "How can I get a reversed copy of a list without changing the original?",
        "Tags: python, list",
        "I have a list of scores and I need to show them from last to first, "
        "but other code still needs the original order.",
    ]
    assert doc.segments[4] == (
        f"{CODE_OPEN}\nscores = [3, 8, 5]\nbackwards = scores.reverse()\n"
        "print(backwards)  # None\nprint(scores)     # [5, 8, 3]\n[/CODE]"
    )
    # the post's two comments follow its body, in Id order (1 then 3)
    assert doc.segments[-2:] == [
        "Note that reverse() returning None is a common source of bugs.",
        "Do you need the copy to be a list, or is any iterable fine?",
    ]
    assert doc.chars == sum(len(s) for s in doc.segments)


def test_answer_document_has_no_title_or_tags(tmp_path):
    docs = by_id(build([POSTS], [COMMENTS], "post", tmp_path)[0])
    answer = docs[f"{SITE}/post-5"]
    assert answer.segments == body_segments(5) + comment_segments(6)
    assert answer.segments[0] == "PostgreSQL has `DISTINCT ON` for exactly this:"
    assert not any(s.startswith("Tags:") for s in answer.segments)
    # the orphan answer is still a document in post mode
    assert docs[f"{SITE}/post-37"].segments == body_segments(37) + comment_segments(29)


def test_comments_on_skipped_posts_go_nowhere(tmp_path):
    docs, _ = build([POSTS], [COMMENTS], "post", tmp_path)
    everything = [s for d in docs for s in d.segments]
    assert "The tag wiki should mention git-lfs." not in everything  # on tag wiki 39
    assert not any("As it stands this cannot be answered" in s for s in everything)  # on empty question 24
    assert not any("distributed version control system" in s for s in everything)  # tag wiki body


def test_comments_follow_id_order_not_file_order(tmp_path):
    posts = write_dump(tmp_path / "s-Posts.xml", "posts", [row(Id=1, PostTypeId=1, Title="T", Body=html("Body."))])
    comments = write_dump(
        tmp_path / "s-Comments.xml",
        "comments",
        [row(Id=i, PostId=1, Text=f"Comment {i}.") for i in (30, 4, 17)] + [row(Id=5, PostId=2, Text="Elsewhere.")],
    )
    (doc,), _ = build([posts], [comments], "post", tmp_path / "w")
    assert doc.segments == ["T", "Body.", "Comment 4.", "Comment 17.", "Comment 30."]


def test_comments_with_bad_ids_are_counted(tmp_path):
    posts = write_dump(tmp_path / "s-Posts.xml", "posts", [row(Id=1, PostTypeId=2, ParentId=9, Body=html("A."))])
    comments = write_dump(
        tmp_path / "s-Comments.xml",
        "comments",
        [
            row(Id=1, PostId="one", Text="Bad post id."),
            row(Id="x", PostId=1, Text="Bad id."),
            row(Id=2, PostId=1, Text="Ok."),
        ],
    )
    (doc,), stats = build([posts], [comments], "post", tmp_path / "w")
    assert doc.segments == ["A.", "Ok."]
    assert stats.comments.bad == {"non-numeric id": 2}


def test_min_chars_skips_short_documents(tmp_path):
    posts = write_dump(
        tmp_path / "s-Posts.xml",
        "posts",
        [
            row(Id=1, PostTypeId=2, ParentId=9, Body=html("Tiny.")),
            row(Id=2, PostTypeId=2, ParentId=9, Body=html("A much longer answer body that is kept.")),
            row(Id=3, PostTypeId=2, ParentId=9, Body="<p>   </p>"),  # no text at all
        ],
    )
    docs, stats = build([posts], [], "post", tmp_path / "w", min_chars=20)
    assert [d.id for d in docs] == ["s/post-2"]
    assert stats.skipped == {"too short": 2} and stats.documents == 1


def test_non_numeric_post_ids_are_counted(tmp_path):
    posts = write_dump(
        tmp_path / "s-Posts.xml",
        "posts",
        [
            row(Id="abc", PostTypeId=1, Title="T", Body=html("Q.")),
            row(Id=2, PostTypeId=2, ParentId="x", Body=html("A.")),
            row(Id=3, PostTypeId=1, Title="Kept", Body=html("Q.")),
        ],
    )
    post_docs, post_stats = build([posts], [], "post", tmp_path / "w")
    assert [d.id for d in post_docs] == ["s/post-2", "s/post-3"]
    assert post_stats.posts.bad == {"non-numeric id": 1}
    thread_docs, thread_stats = build([posts], [], "thread", tmp_path / "w")
    assert [d.id for d in thread_docs] == ["s/thread-3"]
    assert thread_stats.posts.bad == {"non-numeric id": 2}


def test_answer_without_parent_is_counted_not_raised(tmp_path):
    posts = write_dump(
        tmp_path / "s-Posts.xml",
        "posts",
        [row(Id=1, PostTypeId=1, Title="T", Body=html("Q.")), row(Id=2, PostTypeId=2, Body=html("No parent."))],
    )
    docs, stats = build([posts], [], "thread", tmp_path / "w")
    assert [d.id for d in docs] == ["s/thread-1"]
    assert stats.posts.bad == {"missing ParentId": 1}


def test_post_segments():
    question = {"PostTypeId": "1", "Title": "Why? It fails.", "Tags": "<c#><.net>", "Body": "<p>Body.</p>"}
    assert post_segments(question) == ["Why?", "It fails.", "Tags: c#, .net", "Body."]
    assert post_segments({**question, "Tags": ""}) == ["Why?", "It fails.", "Body."]
    assert post_segments({**question, "PostTypeId": "2"}) == ["Body."]


# -- thread documents --------------------------------------------------------------------------


def test_thread_mode_groups_questions_with_answers(tmp_path):
    docs, stats = build([POSTS], [COMMENTS], "thread", tmp_path / "work")
    roots = [1, 4, 8, 11, 13, 16, 19, 21, 26, 29, 31, 34, 40, 999]
    assert [d.id for d in docs] == [f"{SITE}/thread-{r}" for r in roots]
    assert stats.documents == 14
    assert stats.skipped == {"post type 4": 1, "post type 5": 1}
    assert stats.posts.bad == {"empty body": 1}
    assert not (tmp_path / "work" / "documents.sqlite").exists()


def test_thread_orders_answers_by_score_with_their_comments(tmp_path):
    docs = by_id(build([POSTS], [COMMENTS], "thread", tmp_path)[0])
    # question 4: answers 5 (score 21), 6 (9), 7 (-1); each post followed by its own comments
    expected = (
        body_segments(4)
        + comment_segments(5)
        + body_segments(5)
        + comment_segments(6)
        + body_segments(6)
        + comment_segments(7)
        + body_segments(7)
        + comment_segments(8)
    )
    assert docs[f"{SITE}/thread-4"].segments == expected
    assert docs[f"{SITE}/thread-1"].segments == (
        body_segments(1)
        + comment_segments(1, 3)
        + body_segments(2)
        + comment_segments(2)
        + body_segments(3)
        + comment_segments(4)
    )


def test_orphan_answer_is_its_own_thread(tmp_path):
    docs = by_id(build([POSTS], [COMMENTS], "thread", tmp_path)[0])
    assert docs[f"{SITE}/thread-999"].segments == body_segments(37) + comment_segments(29)
    assert all("PYTHONUNBUFFERED" not in s for d in docs.values() if not d.id.endswith("-999") for s in d.segments)


def test_thread_order_ignores_dump_order(tmp_path):
    posts = write_dump(
        tmp_path / "s-Posts.xml",
        "posts",
        [
            row(Id=3, PostTypeId=2, ParentId=1, Score=-2, Body=html("Worst.")),
            row(Id=4, PostTypeId=2, ParentId=1, Score=7, Body=html("Best.")),
            row(Id=1, PostTypeId=1, Score=1, Title="Question", Body=html("Ask.")),
            row(Id=5, PostTypeId=2, ParentId=1, Body=html("No score.")),
            row(Id=2, PostTypeId=2, ParentId=1, Score=7, Body=html("Tied best, lower id.")),
        ],
    )
    (doc,), _ = build([posts], [], "thread", tmp_path / "w")
    assert doc.id == "s/thread-1"
    assert doc.segments == ["Question", "Ask.", "Tied best, lower id.", "Best.", "No score.", "Worst."]


# -- sites -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "site"),
    [
        ("a/b/stackoverflow.com-Posts.xml", "stackoverflow.com"),
        ("dumps/beer/Posts.xml", "beer"),
        ("beer.stackexchange.com-Comments.xml.gz", "beer.stackexchange.com"),
        ("s3://bucket/raw/stackoverflow.com-Posts.sample.xml", "stackoverflow.com"),
        ("s3://bucket/dumps/math/Comments.xml.7z", "math"),
        ("site_posts.xml", "site"),
    ],
)
def test_site_of(uri, site):
    assert site_of(uri) == site


def test_pair_comments():
    # one posts file: every comments file belongs to it, whatever its name
    assert pair_comments(["x/so.com-Posts.xml"], ["y/Comments.xml", "z/other-Comments.xml"]) == {
        "y/Comments.xml": "so.com",
        "z/other-Comments.xml": "so.com",
    }
    posts = ["d/so.com-Posts.xml", "d/beer.com-Posts.xml"]
    assert pair_comments(posts, ["d/beer.com-Comments.xml"]) == {"d/beer.com-Comments.xml": "beer.com"}
    assert pair_comments(["d/a/Posts.xml", "d/b/Posts.xml"], ["d/b/Comments.xml"]) == {"d/b/Comments.xml": "b"}
    assert pair_comments(posts, []) == {}


def test_pair_comments_names_the_unmatched_file():
    with pytest.raises(ValueError) as caught:
        pair_comments(
            ["d/so.com-Posts.xml", "d/beer.com-Posts.xml"], ["d/so.com-Comments.xml", "d/wine.com-Comments.xml"]
        )
    message = str(caught.value)
    assert "d/wine.com-Comments.xml" in message
    assert "beer.com" in message and "so.com" in message


def test_iter_documents_refuses_unpaired_comments_before_reading(tmp_path):
    stats = DocumentStats(RowStats(), RowStats())
    with pytest.raises(ValueError, match=r"elsewhere-Comments\.xml"):
        list(iter_documents(["a-Posts.xml", "b-Posts.xml"], ["elsewhere-Comments.xml"], "post", tmp_path, stats))


def _two_sites(tmp_path, layout):
    def path(site, kind):
        return tmp_path / (f"{site}/{kind}.xml" if layout == "folders" else f"{site}-{kind}.xml")

    files = {}
    for site, word in (("alpha", "Apples"), ("beta", "Bananas")):
        files[site] = (
            write_dump(
                path(site, "Posts"),
                "posts",
                [
                    row(Id=1, PostTypeId=1, Title=f"{word} question", Body=html(f"{word} body.")),
                    row(Id=2, PostTypeId=2, ParentId=1, Score=1, Body=html(f"{word} answer.")),
                ],
            ),
            write_dump(
                path(site, "Comments"),
                "comments",
                [row(Id=1, PostId=1, Text=f"{word} comment on 1."), row(Id=2, PostId=2, Text=f"{word} comment on 2.")],
            ),
        )
    posts = [files["alpha"][0], files["beta"][0]]
    comments = [files["beta"][1], files["alpha"][1]]  # listed in the other order on purpose
    return posts, comments


@pytest.mark.parametrize("layout", ["prefixed", "folders"])
def test_sites_with_overlapping_ids_never_mix(tmp_path, layout):
    posts, comments = _two_sites(tmp_path, layout)
    docs = by_id(build(posts, comments, "post", tmp_path / "w")[0])
    assert docs == {
        "alpha/post-1": Document("alpha/post-1", ["Apples question", "Apples body.", "Apples comment on 1."]),
        "alpha/post-2": Document("alpha/post-2", ["Apples answer.", "Apples comment on 2."]),
        "beta/post-1": Document("beta/post-1", ["Bananas question", "Bananas body.", "Bananas comment on 1."]),
        "beta/post-2": Document("beta/post-2", ["Bananas answer.", "Bananas comment on 2."]),
    }
    threads = build(posts, comments, "thread", tmp_path / "w")[0]
    assert [(d.id, d.segments) for d in threads] == [
        (
            "alpha/thread-1",
            ["Apples question", "Apples body.", "Apples comment on 1.", "Apples answer.", "Apples comment on 2."],
        ),
        (
            "beta/thread-1",
            ["Bananas question", "Bananas body.", "Bananas comment on 1.", "Bananas answer.", "Bananas comment on 2."],
        ),
    ]
