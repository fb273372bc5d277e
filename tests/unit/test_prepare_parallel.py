"""Data preparation in parallel pieces: the same dataset for any worker count and piece size, the
documents the serial reader makes, compressed inputs through a decompressor process, and
structure errors with the file's own line numbers."""

from __future__ import annotations

import bz2
import gzip
import sqlite3
from contextlib import closing
from pathlib import Path

import py7zr
import pytest
from dump_helpers import COMMENTS, POSTS, dump_bytes, row

from conftest import shared_path
from sobert_api.storage import Storage
from sobert_trainer.data.chunks import file_chunks, row_aligned_ranges, spill_chunks
from sobert_trainer.data.documents import DocumentStats, iter_documents, load_comments, site_of
from sobert_trainer.data.dump import DumpFormatError, RowStats
from sobert_trainer.data.pipeline import SAMPLE_BYTES_PER_DOCUMENT, sample_pieces
from sobert_trainer.data.post_chunks import PieceOrder, PieceTask, parse_piece
from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset
from sobert_trainer.data.sample import BottomK, merge
from sobert_trainer.data.shards import read_documents_jsonl


def _prepare(tmp: Path, posts: list[str], comments: list[str], workers: int, chunk_bytes: int, **kw) -> dict:
    config = PrepareConfig(posts=posts, comments=comments, vocab_size=600, workers=workers,
                           chunk_bytes=chunk_bytes, **kw)  # fmt: skip
    return prepare_dataset(config, Storage.open(str(tmp)), dataset_id="so-test", force=True)


def _published(manifest: dict) -> tuple:
    """What must not depend on how the work was split: every file's checksum, and the counts."""
    return manifest["files"], manifest["counts"]


def real_or_fixture(real: bool) -> tuple[list[str], list[str]]:
    if not real:
        return [str(POSTS)], [str(COMMENTS)]
    base = shared_path("stackoverflow_posts")
    return (
        [str(base / "stackoverflow.com-Posts.sample.xml"), str(base / "beer.stackexchange.com-Posts.xml")],
        [str(base / "stackoverflow.com-Comments.sample.xml")],
    )


def _docs_for_sample_pieces(pieces: int, chunk_bytes: int) -> int:
    """A tokenizer sample size whose sample pieces are `pieces` of the dump's."""
    return pieces * chunk_bytes // SAMPLE_BYTES_PER_DOCUMENT


def _posts_in(dataset_dir: Path, prefixes: list[str], sep_id: int) -> list[tuple[int, ...]]:
    """Every post of the shards, as its tokens up to and including its [SEP]."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    posts: list[tuple[int, ...]] = []
    for prefix in prefixes:
        shard = IndexedDataset(str(dataset_dir / prefix))
        stream = np.concatenate([shard[i] for i in range(len(shard))]).tolist()
        ends = [i for i, token in enumerate(stream) if token == sep_id]
        posts += [tuple(stream[start + 1 : end + 1]) for start, end in zip([-1, *ends], ends, strict=False)]
    return posts


def test_held_out_posts_are_in_no_training_shard(tmp_path):
    """The validation split is by post: each post's tokens go to the training shards or the
    held-out ones, never both, about `validation_fraction` of them (chosen by a hash of the post's
    tokens: a post repeated verbatim falls on one side)."""
    from tokenizers import Tokenizer

    from sobert_trainer.data.tokenizer import SEP

    posts, comments = real_or_fixture(True)
    manifest = _prepare(tmp_path, posts, comments, workers=2, chunk_bytes=64 << 10, validation_fraction=0.05)
    fetched = tmp_path / "fetched"
    Storage.open(str(tmp_path)).fetch_tree("data/so-test", fetched)
    sep_id = Tokenizer.from_file(str(fetched / "tokenizer.json")).token_to_id(SEP)
    training = _posts_in(fetched, manifest["shards"], sep_id)
    held_out = _posts_in(fetched, manifest["validation_shards"], sep_id)
    assert len(training) == manifest["counts"]["packed_posts"]
    assert len(held_out) == manifest["counts"]["validation"]["posts"]
    assert not set(held_out) & set(training)
    assert 0.03 < len(held_out) / (len(held_out) + len(training)) < 0.07


@pytest.mark.parametrize("real", [False, True], ids=["fixture", "real-sample"])
@pytest.mark.parametrize("sample", ["every-piece", "two-pieces"])
def test_the_dataset_is_the_same_for_any_worker_count(tmp_path, real, sample):
    posts, comments = real_or_fixture(real)
    chunk_bytes = 64 << 10 if real else 5_000  # several pieces per file
    k = 200_000 if sample == "every-piece" else _docs_for_sample_pieces(2, chunk_bytes)
    settings = {"tokenizer_train_docs": k, "validation_fraction": 0.1}
    reference = _prepare(tmp_path / "a", posts, comments, workers=1, chunk_bytes=chunk_bytes, **settings)
    for workers in (2, 3):
        manifest = _prepare(tmp_path / f"w{workers}", posts, comments, workers=workers, chunk_bytes=chunk_bytes,
                            **settings)  # fmt: skip
        assert _published(manifest) == _published(reference), workers
    assert reference["counts"]["documents"] > 30 and reference["counts"]["validation"]["posts"] > 0
    layout = reference["pipeline"]
    assert layout["sample_pieces"] == (layout["pieces"] if sample == "every-piece" else 2)
    if sample == "every-piece":
        # Documents close at the end of their piece: the pieces show in the layout, not in the tokens.
        whole = _prepare(tmp_path / "whole", posts, comments, workers=2, chunk_bytes=8 << 20, validation_fraction=0.1)
        assert whole["counts"]["tokens"] == reference["counts"]["tokens"]
        held_out, in_pieces = whole["counts"]["validation"], reference["counts"]["validation"]
        assert held_out == {**in_pieces, "shard_documents": held_out["shard_documents"]}
        assert held_out["shard_documents"] <= in_pieces["shard_documents"]
        assert whole["counts"]["shard_documents"] < reference["counts"]["shard_documents"]


def test_thread_documents_are_the_same_for_any_worker_count(tmp_path, monkeypatch):
    from sobert_trainer.data import prepare

    posts, comments = real_or_fixture(False)
    monkeypatch.setattr(prepare, "PIECE_DOCS", 4)  # pieces of 4 threads
    one = _prepare(tmp_path / "a", posts, comments, workers=1, chunk_bytes=8 << 20, document_unit="thread")
    three = _prepare(tmp_path / "b", posts, comments, workers=3, chunk_bytes=8 << 20, document_unit="thread")
    assert _published(one) == _published(three)
    assert one["counts"]["documents"] < _prepare(tmp_path / "c", posts, comments, 1, 8 << 20)["counts"]["documents"]


@pytest.mark.parametrize("real", [False, True], ids=["fixture", "real-sample"])
def test_pieces_hold_the_documents_the_serial_reader_makes(tmp_path, real):
    """The reference: `iter_documents` reads the dump in one pass, in order."""
    posts, comments = real_or_fixture(real)
    stats = DocumentStats(RowStats(), RowStats())
    expected = [d.segments for d in iter_documents(posts, comments, "post", tmp_path / "serial", stats, 32)]

    db_path = tmp_path / "comments.sqlite"
    piece_stats = DocumentStats(RowStats(), RowStats())
    with closing(sqlite3.connect(db_path)) as db:
        load_comments(db, {uri: site_of(posts[0]) for uri in comments}, piece_stats.comments, None)
    got, piece, order = [], 0, PieceOrder()
    for uri in posts:
        for chunk in file_chunks(uri, Path(uri), 3_000):
            out = tmp_path / f"piece-{piece}.jsonl"
            parsed = parse_piece(PieceTask(chunk, piece, site_of(uri), str(db_path), 32, str(out), 1, 10))
            order.check(parsed)
            piece_stats.merge(parsed.stats)
            got += list(read_documents_jsonl(out))
            piece += 1
    assert piece > len(posts)  # the files were cut
    assert got == expected
    assert piece_stats.as_dict() == stats.as_dict()


@pytest.mark.parametrize("kind", ["gz", "bz2", "7z"])
def test_compressed_real_rows_give_the_plain_files_dataset(tmp_path, kind):
    """A stream's plan is known only when it ends, a plain file's at the start (its sample pieces
    are parsed first): the same sample pieces, the same dataset."""
    posts, _ = real_or_fixture(True)
    k = _docs_for_sample_pieces(3, 256 << 10)
    plain = _prepare(tmp_path / "plain", posts[1:], [], workers=2, chunk_bytes=256 << 10, tokenizer_train_docs=k)
    assert 3 == plain["pipeline"]["sample_pieces"] < plain["pipeline"]["pieces"]
    source = Path(posts[1])
    packed = tmp_path / f"{source.name}.{kind}"
    if kind == "gz":
        packed.write_bytes(gzip.compress(source.read_bytes()))
    elif kind == "bz2":
        packed.write_bytes(bz2.compress(source.read_bytes()))
    else:
        with py7zr.SevenZipFile(packed, "w") as archive:
            archive.write(source, "Posts.xml")
    compressed = _prepare(tmp_path / "packed", [str(packed)], [], workers=2, chunk_bytes=256 << 10,
                          tokenizer_train_docs=k)  # fmt: skip
    assert _published(compressed) == _published(plain)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_tokenizer_trains_while_the_rest_of_the_dump_is_parsed(tmp_path, workers):
    """Sample pieces are parsed first and training begins once they are, while the rest are parsed
    (with one worker, at most its two slots' more pieces have been parsed by then)."""
    posts, comments = real_or_fixture(True)
    chunk_bytes = 32 << 10
    manifest = _prepare(tmp_path, posts, comments, workers=workers, chunk_bytes=chunk_bytes,
                        tokenizer_train_docs=_docs_for_sample_pieces(3, chunk_bytes))  # fmt: skip
    layout = manifest["pipeline"]
    assert layout["pieces"] > 20 and layout["sample_pieces"] == 3
    began = layout["parsed_when_tokenizer_training_began"]
    assert began <= 3 + 2 if workers == 1 else began < layout["pieces"]
    timings = manifest["timings_s"]
    assert timings["tokenizer_train_began"] < timings["parse"] <= timings["total"]


def test_sample_pieces_are_spread_evenly_over_the_dump():
    assert sample_pieces(10, 1, 4096) == [5]
    assert sample_pieces(10, 2, 4096) == [2, 7]
    assert sample_pieces(9, 3, 4096) == [1, 4, 7]
    assert sample_pieces(4, 1_000, 4096) == [0, 1, 2, 3]  # a small dump: every piece
    assert sample_pieces(1_000, 200_000, 8 << 20) == [(2 * j + 1) * 1_000 // 196 for j in range(98)]


def test_a_dump_with_no_usable_posts_is_an_error_naming_it(tmp_path):
    path = tmp_path / "site-Posts.xml"
    path.write_bytes(dump_bytes("posts", [row(Id=i, PostTypeId=1, Title="t", Body="<p>x</p>") for i in range(5)]))
    with pytest.raises(ValueError, match=r"no usable documents .*site-Posts\.xml"):
        _prepare(tmp_path / "out", [str(path)], [], workers=2, chunk_bytes=1_000)
    assert not list((tmp_path / "out").rglob("manifest.json"))


def test_a_corrupt_archive_is_named(tmp_path):
    broken = tmp_path / "site-Posts.xml.gz"
    broken.write_bytes(gzip.compress(POSTS.read_bytes())[:200])
    with pytest.raises(DumpFormatError, match=r"site-Posts\.xml\.gz"):
        _prepare(tmp_path / "out", [str(broken)], [], workers=2, chunk_bytes=1_000)


def test_an_archive_refused_before_its_first_piece_is_an_error_not_a_hang(tmp_path):
    archive = tmp_path / "site-Posts.7z"
    with py7zr.SevenZipFile(archive, "w") as out:
        out.write(POSTS, "Posts.xml")
        out.write(COMMENTS, "Comments.xml")
    with pytest.raises(DumpFormatError, match=r"expected one \.xml member"):
        _prepare(tmp_path / "out", [str(archive)], [], workers=2, chunk_bytes=1_000)
    with pytest.raises(DumpFormatError, match=r"missing-Posts\.xml\.gz: not found"):
        _prepare(tmp_path / "out", [str(tmp_path / "missing-Posts.xml.gz")], [], workers=2, chunk_bytes=1_000)


def _many_rows(count: int) -> list[str]:
    return [row(Id=i, PostTypeId=1, Title=f"Question {i}", Body=f"<p>Body of question {i}, long enough.</p>")
            for i in range(1, count + 1)]  # fmt: skip


def test_a_broken_line_in_a_later_piece_is_reported_at_its_line_in_the_file(tmp_path):
    lines: list[str | bytes] = [*_many_rows(200), "oops", *_many_rows(3)]
    path = tmp_path / "site-Posts.xml"
    path.write_bytes(dump_bytes("posts", lines))
    line = 2 + 200 + 1  # declaration, <posts>, 200 rows, then the junk
    with pytest.raises(DumpFormatError, match=rf"site-Posts.xml:{line}: unexpected content 'oops'"):
        _prepare(tmp_path / "out", [str(path)], [], workers=2, chunk_bytes=2_000)


def test_rows_after_the_root_closed_in_an_earlier_piece_are_refused(tmp_path):
    path = tmp_path / "site-Posts.xml"
    body = dump_bytes("posts", _many_rows(100))
    path.write_bytes(body + "\n".join(_many_rows(100)).encode() + b"\n")
    closing_line = 2 + 100 + 1
    with pytest.raises(DumpFormatError, match=rf"site-Posts.xml:{closing_line + 1}: .*after </posts>"):
        _prepare(tmp_path / "out", [str(path)], [], workers=2, chunk_bytes=len(body) - 10)


def test_a_truncated_file_is_refused_from_its_last_piece(tmp_path):
    path = tmp_path / "site-Posts.xml"
    path.write_bytes(dump_bytes("posts", _many_rows(100)).rsplit(b"</posts>", 1)[0])
    with pytest.raises(DumpFormatError, match=r"site-Posts.xml:102: file ends before </posts>"):
        _prepare(tmp_path / "out", [str(path)], [], workers=2, chunk_bytes=1_000)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 1_000, 10**6])
def test_a_spilled_stream_is_cut_where_the_file_is_cut(tmp_path, chunk_bytes):
    data = POSTS.read_bytes()
    ranges = row_aligned_ranges(POSTS, chunk_bytes)
    with open(POSTS, "rb") as stream:
        pieces = list(spill_chunks("s", stream, tmp_path / "spill", chunk_bytes))
    assert [c.read() for c in pieces] == [data[a:b] for a, b in ranges]
    assert [c.final for c in pieces] == [False] * (len(ranges) - 1) + [True]
    assert all(piece.endswith(b"\n") for piece in (data[a:b] for a, b in ranges))


def test_bottom_k_of_pieces_is_the_bottom_k_of_the_whole():
    import random

    rng = random.Random(0)
    entries = [(rng.randrange(1000), piece, position) for piece in range(20) for position in range(50)]
    pieces = []
    for piece in range(20):
        keep = BottomK(30)
        for entry in entries[piece * 50 : (piece + 1) * 50]:
            keep.offer(entry)
        pieces.append(keep.entries())
    chosen = merge(30, pieces)
    expected = sorted(entries)[:30]
    assert sorted((p, q) for p, qs in chosen.items() for q in qs) == sorted((p, q) for _, p, q in expected)
