"""Dump rows to pretraining documents: one per post, or one per thread.

A document is a list of sentence-like segments (Megatron's BERT dataset packs whole sentences
into samples). `post` documents are a question (title, tags, body) or an answer (body), each
followed by its comments; `thread` documents are a question followed by its answers (highest
score first), each post followed by its comments. Comments and thread members are grouped in an
on-disk SQLite table, so memory stays bounded whatever the dump size.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sobert_trainer.data.dump import RowStats, iter_comments, iter_posts
from sobert_trainer.data.html_text import html_to_segments, plain_segments

QUESTION, ANSWER = "1", "2"
_TAGS = re.compile(r"<([^<>]+)>")


Members = list[tuple[str, int, list[str]]]  # (site, post id, segments) per post in a document


@dataclass(frozen=True)
class Document:
    id: str
    segments: list[str]

    @property
    def chars(self) -> int:
        return sum(len(s) for s in self.segments)


def post_segments(row: dict[str, str]) -> list[str]:
    """The text of one post row: title and tags (questions), then the body."""
    segments: list[str] = []
    if row.get("PostTypeId") == QUESTION:
        segments += plain_segments(row.get("Title", ""))
        tags = _TAGS.findall(row.get("Tags", ""))
        if tags:
            segments.append("Tags: " + ", ".join(tags))
    segments += html_to_segments(row.get("Body", ""))
    return segments


def site_of(uri: str) -> str:
    """The site a dump file belongs to: `stackoverflow.com-Posts.xml` -> `stackoverflow.com`.

    Files named plainly (`Posts.xml`, as inside a site's archive) take their folder's name.
    """
    parts = uri.rstrip("/").split("/")
    match = re.match(r"(.+?)[-_.](posts|comments)\b", parts[-1], flags=re.IGNORECASE)
    if match:
        return match.group(1)
    return parts[-2] if len(parts) > 1 else ""


def pair_comments(posts: list[str], comments: list[str]) -> dict[str, str]:
    """Map each comments file to the site of its posts file; error when one has no match."""
    sites = {site_of(uri) for uri in posts}
    if len(posts) == 1:
        return {uri: site_of(posts[0]) for uri in comments}
    pairs = {}
    for uri in comments:
        site = site_of(uri)
        if site not in sites:
            raise ValueError(
                f"data.comments: {uri} matches no posts file by site (sites: {', '.join(sorted(sites))}); "
                "name files <site>-Posts.xml / <site>-Comments.xml or keep each site in its own folder"
            )
        pairs[uri] = site
    return pairs


def load_comments(db: sqlite3.Connection, sites: dict[str, str], stats: RowStats, endpoint_url: str | None) -> None:
    """Comments grouped by (site, post id) in an on-disk SQLite table (`comments_of` reads them),
    so the join costs disk, not memory, whatever the dump's size."""
    db.execute("CREATE TABLE IF NOT EXISTS comments (site TEXT, post_id INTEGER, id INTEGER, text TEXT)")
    for uri, site in sites.items():
        batch = []
        for row in iter_comments(uri, stats, endpoint_url):
            try:
                batch.append((site, int(row["PostId"]), int(row["Id"]), row["Text"]))
            except ValueError:
                stats.bad["non-numeric id"] += 1
                continue
            if len(batch) >= 10_000:
                db.executemany("INSERT INTO comments VALUES (?, ?, ?, ?)", batch)
                batch.clear()
        db.executemany("INSERT INTO comments VALUES (?, ?, ?, ?)", batch)
    db.execute("CREATE INDEX IF NOT EXISTS comments_post ON comments (site, post_id, id)")
    db.commit()


def comments_of(db: sqlite3.Connection, site: str, post_id: int) -> list[str]:
    """The segments of a post's comments, in id order."""
    rows = db.execute("SELECT text FROM comments WHERE site = ? AND post_id = ? ORDER BY id", (site, post_id))
    return [segment for (text,) in rows for segment in plain_segments(text)]


@dataclass
class DocumentStats:
    posts: RowStats
    comments: RowStats
    documents: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def merge(self, other: DocumentStats) -> None:
        self.posts.merge(other.posts)
        self.comments.merge(other.comments)
        self.documents += other.documents
        for key, count in other.skipped.items():
            self.skipped[key] = self.skipped.get(key, 0) + count

    def as_dict(self) -> dict:
        return {
            "posts": self.posts.as_dict(),
            "comments": self.comments.as_dict(),
            "documents": self.documents,
            "skipped": dict(sorted(self.skipped.items())),
        }


def iter_documents(
    posts: list[str],
    comments: list[str],
    unit: str,
    workdir: Path,
    stats: DocumentStats,
    min_chars: int = 0,
    endpoint_url: str | None = None,
) -> Iterator[Document]:
    """Documents from the dumps, in dump order (post) or thread order (thread)."""
    comment_sites = pair_comments(posts, comments)
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "documents.sqlite"
    db_path.unlink(missing_ok=True)
    db = sqlite3.connect(db_path)
    try:
        load_comments(db, comment_sites, stats.comments, endpoint_url)
        source = (
            _posts_by_thread(db, posts, stats, endpoint_url)
            if unit == "thread"
            else _posts_in_order(posts, stats, endpoint_url)
        )
        for doc_id, members in source:
            document = assemble(doc_id, members, db, min_chars, stats)
            if document is not None:
                yield document
    finally:
        db.close()
        db_path.unlink(missing_ok=True)


def assemble(
    doc_id: str, members: Members, db: sqlite3.Connection, min_chars: int, stats: DocumentStats
) -> Document | None:
    """A document of `members` (each post followed by its comments), or None (counted) if it is
    shorter than `min_chars`."""
    segments: list[str] = []
    for site, post_id, post_segs in members:
        segments += post_segs
        segments += comments_of(db, site, post_id)
    document = Document(doc_id, segments)
    if not segments or document.chars < min_chars:
        stats.skipped["too short"] = stats.skipped.get("too short", 0) + 1
        return None
    stats.documents += 1
    return document


def usable_post(row: dict[str, str], stats: DocumentStats) -> tuple[int, list[str]] | None:
    if row["PostTypeId"] not in (QUESTION, ANSWER):  # tag wikis, moderator nominations, ...
        key = f"post type {row['PostTypeId']}"
        stats.skipped[key] = stats.skipped.get(key, 0) + 1
        return None
    try:
        post_id = int(row["Id"])
    except ValueError:
        stats.posts.bad["non-numeric id"] += 1
        return None
    if not row.get("Body", "").strip():
        stats.posts.bad["empty body"] += 1
        return None
    return post_id, post_segments(row)


def _posts_in_order(posts, stats, endpoint_url) -> Iterator[tuple[str, Members]]:
    for uri in posts:
        site = site_of(uri)
        for row in iter_posts(uri, stats.posts, endpoint_url):
            usable = usable_post(row, stats)
            if usable:
                yield f"{site}/post-{usable[0]}", [(site, *usable)]


def _posts_by_thread(db, posts, stats, endpoint_url) -> Iterator[tuple[str, Members]]:
    db.execute(
        "CREATE TABLE posts (site TEXT, root INTEGER, is_answer INTEGER, score INTEGER, id INTEGER, segments TEXT)"
    )
    for uri in posts:
        site = site_of(uri)
        batch = []
        for row in iter_posts(uri, stats.posts, endpoint_url):
            usable = usable_post(row, stats)
            if not usable:
                continue
            post_id, segments = usable
            is_answer = row["PostTypeId"] == ANSWER
            if is_answer and not row.get("ParentId", "").strip():
                stats.posts.bad["missing ParentId"] += 1
                continue
            try:
                root = int(row["ParentId"]) if is_answer else post_id
                score = int(row.get("Score") or 0)
            except ValueError:
                stats.posts.bad["non-numeric id"] += 1
                continue
            batch.append((site, root, int(is_answer), score, post_id, json.dumps(segments)))
            if len(batch) >= 10_000:
                db.executemany("INSERT INTO posts VALUES (?, ?, ?, ?, ?, ?)", batch)
                batch.clear()
        db.executemany("INSERT INTO posts VALUES (?, ?, ?, ?, ?, ?)", batch)
    db.execute("CREATE INDEX posts_thread ON posts (site, root, is_answer, score DESC, id)")
    current: tuple[str, int] | None = None
    members: list[tuple[str, int, list[str]]] = []
    query = "SELECT site, root, id, segments FROM posts ORDER BY site, root, is_answer, score DESC, id"
    for site, root, post_id, segments in db.execute(query):
        if (site, root) != current and members:
            assert current is not None
            yield f"{current[0]}/thread-{current[1]}", members
            members = []
        current = (site, root)
        members.append((site, post_id, json.loads(segments)))
    if members:
        assert current is not None
        yield f"{current[0]}/thread-{current[1]}", members
