"""One piece of a posts dump to `post` documents, in a worker process (`prepare.py` runs many).

A worker parses its piece's rows (`dump.RowParser`, from the state the piece starts in), turns each
question or answer into a document with its comments (read from the comments' SQLite table,
opened read-only: the join never holds a map of the dump in memory), writes the documents to the
piece's JSON-lines file and returns its counts, where its structure ended, and its bottom-k
entries for the tokenizer sample (`sample.py`). The parent checks the pieces' structure against
each other in dump order (`check_structure`) and turns line numbers within a piece into line
numbers of the file.
"""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sobert_trainer.data.chunks import Chunk
from sobert_trainer.data.documents import DocumentStats, assemble, usable_post
from sobert_trainer.data.dump import DumpFormatError, RowParser, RowStats
from sobert_trainer.data.sample import BottomK, Entry, priority


@dataclass(frozen=True)
class PieceTask:
    chunk: Chunk
    piece: int  # global order of the piece over all posts files
    site: str
    comments_db: str
    min_chars: int
    out: str  # the piece's documents, one JSON list of segments per line
    seed: int
    sample_k: int


@dataclass
class ParsedPiece:
    piece: int
    chunk: Chunk | None  # None: made in the parent (`thread` documents), not parsed from a dump's piece
    out: str
    stats: DocumentStats
    end_state: str = "body"
    lines: int = 0  # lines read (to the failure, if any)
    first_content_line: int | None = None  # within the piece
    sample: list[Entry] = field(default_factory=list)
    failure: tuple[int | None, str] | None = None  # (line within the piece, problem or message)


def parse_piece(task: PieceTask) -> ParsedPiece:
    chunk = task.chunk
    stats = DocumentStats(RowStats(), RowStats())
    result = ParsedPiece(task.piece, chunk, task.out, stats)
    parser = RowParser(chunk.source, "posts", ("Id", "PostTypeId"), stats.posts,
                       state="prolog" if chunk.index == 0 else "body")  # fmt: skip
    sample = BottomK(task.sample_k)
    db = sqlite3.connect(f"file:{task.comments_db}?mode=ro", uri=True)
    try:
        with open(task.out, "w", encoding="utf-8") as out:
            position = 0
            for row in parser.rows(io.BytesIO(chunk.read())):
                usable = usable_post(row, stats)
                if not usable:
                    continue
                doc_id = f"{task.site}/post-{usable[0]}"
                document = assemble(doc_id, [(task.site, *usable)], db, task.min_chars, stats)
                if document is None:
                    continue
                out.write(json.dumps(document.segments, ensure_ascii=False) + "\n")
                sample.offer((priority(task.seed, doc_id), task.piece, position))
                position += 1
            if chunk.final:
                parser.finish()
            else:
                parser.end_piece()
    except DumpFormatError as exc:
        result.failure = (exc.line, exc.problem or str(exc))
    finally:
        db.close()
        if chunk.owned:
            Path(chunk.path).unlink(missing_ok=True)
    result.end_state, result.lines = parser.state, parser.line_no
    result.first_content_line, result.sample = parser.first_content_line, sample.entries()
    return result


class PieceOrder:
    """The pieces of one dump file, checked in order: line numbers and structure across pieces."""

    def __init__(self, root: str = "posts"):
        self.root = root
        self.lines_before = 0
        self.previous_state: str | None = None

    def check(self, parsed: ParsedPiece) -> None:
        """Raise the piece's structural error with the file's line number, or the error a piece
        boundary hides (content after the root closed in an earlier piece)."""
        chunk, root = parsed.chunk, self.root
        assert chunk is not None, "only pieces parsed from a dump are checked"
        if chunk.index == 0:
            self.lines_before, self.previous_state = 0, None
        if parsed.failure is not None:
            line, problem = parsed.failure
            if line is None:
                raise DumpFormatError(problem)
            raise DumpFormatError(f"{chunk.source}:{self.lines_before + line}: {problem}")
        if self.previous_state is not None and self.previous_state != "body" and parsed.first_content_line:
            where = f"after </{root}>" if self.previous_state == "closed" else f"before the <{root}> root element"
            line = self.lines_before + parsed.first_content_line
            raise DumpFormatError(f"{chunk.source}:{line}: content {where}")
        self.lines_before += parsed.lines
        self.previous_state = parsed.end_state
