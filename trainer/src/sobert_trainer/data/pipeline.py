"""The order of prepare's work on its worker pool: parse pieces, train the tokenizer on the sample
pieces while the rest are still parsed, and tokenize parsed pieces as soon as the tokenizer exists.

Three kinds of work share one pool of `workers` processes and this process:
- **parse** a piece of a posts dump into documents (`post_chunks.parse_piece`, on the pool);
- **train** the tokenizer (`train`, on a thread of this process, which is otherwise idle) once the
  *sample pieces* are parsed: a stratified choice of pieces spread evenly over the dump
  (`sample_pieces`), as many as the tokenizer sample needs; the sample is the bottom k of their
  documents (`sample.py`);
- **pack** a parsed piece: tokenize it and write its Megatron documents (`shards.pack_piece`, on the
  pool), preferred over parsing once the tokenizer exists, so parsed text does not pile up on disk.

Pieces are parsed sample pieces first when the whole plan is known up front (plain files); a
stream's plan is known when it ends. Results are taken in dump order whatever order they finish in:
`accept` checks each parsed piece (structure, line numbers) in dump order, and the shard writer
appends packed pieces in dump order, so the output depends on the pieces, never on the workers.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sobert_trainer.data import sample
from sobert_trainer.data.post_chunks import ParsedPiece, PieceTask, parse_piece
from sobert_trainer.data.shards import (
    PACK_TOKENS,
    PieceShard,
    ShardStats,
    ShardWriter,
    pack_piece,
    read_documents_jsonl,
)

log = logging.getLogger(__name__)

# Bytes of dump per sampled document when choosing how many sample pieces to parse first: Posts.xml
# rows average ~1.7 KB and a few are unusable, and the bottom k wants ~2x the documents it keeps.
SAMPLE_BYTES_PER_DOCUMENT = 4096


def sample_pieces(planned: int, sample_docs: int, chunk_bytes: int) -> list[int]:
    """The pieces (of `planned`) whose documents the tokenizer sample is drawn from: evenly spaced
    over the dump (posts are in date order, so this spans its years), enough for `sample_docs`
    documents; every piece when the dump is small."""
    needed = min(planned, max(1, math.ceil(sample_docs * SAMPLE_BYTES_PER_DOCUMENT / chunk_bytes)))
    return [(2 * j + 1) * planned // (2 * needed) for j in range(needed)]


def sample_first(tasks: list[PieceTask], sample_docs: int, chunk_bytes: int) -> list[PieceTask]:
    """`tasks` (a known plan, in dump order) with the sample pieces' moved to the front."""
    chosen = set(sample_pieces(len(tasks), sample_docs, chunk_bytes))
    return [t for t in tasks if t.piece in chosen] + [t for t in tasks if t.piece not in chosen]


@dataclass
class Timings:
    """Seconds from the start of the pipeline (`tokenizer_train` is a duration)."""

    started: float = field(default_factory=time.monotonic)
    parsed: float = 0.0  # the last piece parsed
    training_began: float = 0.0
    tokenizer_ready: float = 0.0
    tokenizer_train: float = 0.0
    finished: float = 0.0

    def mark(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def as_dict(self) -> dict:
        return {
            "parse": self.parsed,
            "tokenizer_train_began": self.training_began,
            "tokenizer_train": self.tokenizer_train,
            "tokenize_and_write": round(self.finished - self.tokenizer_ready, 3),
            "total": self.finished,
        }


@dataclass(frozen=True)
class PipelineConfig:
    sample_docs: int  # k of the bottom-k tokenizer sample
    chunk_bytes: int  # the pieces' size, to size the sample
    shards_dir: Path  # where the shard writer puts `<name>_<k>_text_sentence.{bin,idx}`
    name: str
    validation_fraction: float = 0.0  # of the posts, held out (`shards.held_out`) in `<name>_valid_*` shards
    pack_tokens: int = PACK_TOKENS


Source = PieceTask | ParsedPiece  # a piece to parse on the pool, or one already made in this process


class PreparePipeline:
    """Runs `sources` (pieces in the order to start them, numbered in dump order) through parse,
    tokenizer training and packing on `pool`; `planned` is the number of pieces when known up front.

    `accept(parsed)` sees every parsed piece in dump order and raises to stop on a bad one;
    `train(documents)` makes the tokenizer from the sample documents and returns its saved path
    and vocabulary size.
    """

    def __init__(self, pool, workers: int, config: PipelineConfig, sources: Iterator[Source],
                 planned: int | None, accept: Callable[[ParsedPiece], None],
                 train: Callable[[Iterator[list[str]]], tuple[Path, int]]):  # fmt: skip
        self.pool, self.slots, self.config = pool, workers + 1, config
        self.sources, self.planned = sources, planned
        self.accept, self.train = accept, train
        # The training and the validation shards' writers, once the vocabulary size is known.
        self.writers: tuple[ShardWriter, ShardWriter] | None = None
        self.vocab_size = 0
        self.events: queue.Queue = queue.Queue()
        self.timings = Timings()
        self.in_flight = 0
        self.pulled = 0
        self.exhausted = False
        self.sample: list[int] | None = None
        self.parsed: dict[int, ParsedPiece] = {}  # by piece, until packed
        self.accepted = 0  # pieces [0, accepted) checked in dump order
        self.to_pack: list[int] = []  # parsed pieces not yet submitted to pack, ascending
        self.packed: dict[int, PieceShard] = {}  # until appended in dump order
        self.written = 0
        self.training: threading.Thread | None = None
        self.tokenizer_path: Path | None = None
        self.parsed_when_training_began = 0  # pieces, of `planned`

    def layout(self) -> dict:
        """How the work overlapped: the pieces, the sample pieces, and how many pieces were parsed
        when the tokenizer began training (the rest were parsed while it trained)."""
        return {"pieces": self.planned, "sample_pieces": len(self.sample or []),
                "parsed_when_tokenizer_training_began": self.parsed_when_training_began}  # fmt: skip

    def run(self) -> tuple[ShardStats, ShardStats]:
        """The training and the validation shards' statistics."""
        while not self._done():
            self._submit()
            if self._done():
                break
            kind, value = self.events.get()
            if kind == "error":
                raise value
            getattr(self, f"_on_{kind}")(value)
        self.timings.finished = self.timings.mark()
        if self.writers is None:
            return ShardStats(), ShardStats()
        train, validation = self.writers
        return train.close(), validation.close()

    def _done(self) -> bool:
        return self.exhausted and self.in_flight == 0 and self.planned is not None and self.written == self.planned

    # -- starting work ---------------------------------------------------------------------------
    def _submit(self) -> None:
        while self.in_flight < self.slots:
            if self.tokenizer_path is not None and self.to_pack:
                self._start(pack_piece, self._pack_args(self.to_pack.pop(0)), "packed")
            elif not self.exhausted:
                self._pull()
            else:
                break
        self._maybe_train()

    def _pull(self) -> None:
        try:
            source = next(self.sources)
        except StopIteration:
            self.exhausted = True
            self.planned = self.pulled if self.planned is None else self.planned
            self._note_all_parsed()
            return
        self.pulled += 1
        if isinstance(source, ParsedPiece):
            self._on_parsed(source)
        else:
            self._start(parse_piece, source, "parsed")

    def _start(self, function, argument, kind: str) -> None:
        self.in_flight += 1
        self.pool.apply_async(function, (argument,), callback=lambda result: self.events.put((kind, result)),
                              error_callback=lambda exc: self.events.put(("error", exc)))  # fmt: skip

    def _pack_args(self, piece: int) -> tuple[int, str, str, int, int, float]:
        config = self.config
        return (piece, self.parsed[piece].out, str(self.tokenizer_path), self.vocab_size, config.pack_tokens,
                config.validation_fraction)  # fmt: skip

    def _maybe_train(self) -> None:
        if self.training is not None or self.planned is None:
            return
        if self.sample is None:
            self.sample = sample_pieces(self.planned, self.config.sample_docs, self.config.chunk_bytes)
        if any(p not in self.parsed or self.parsed[p].failure is not None for p in self.sample):
            return  # a failed sample piece is reported when it is accepted
        entries = [self.parsed[p].sample for p in self.sample]
        chosen = sample.merge(self.config.sample_docs, entries)
        outs = {p: Path(self.parsed[p].out) for p in self.sample}
        self.parsed_when_training_began, self.timings.training_began = len(self.parsed), self.timings.mark()
        log.info("prepare: training the tokenizer on %d sample piece(s); %d of %d pieces parsed", len(self.sample),
                 len(self.parsed), self.planned)  # fmt: skip
        self.training = threading.Thread(target=self._train, args=(outs, chosen), name="tokenizer-train", daemon=True)
        self.training.start()

    def _train(self, outs: dict[int, Path], chosen: dict[int, set[int]]) -> None:
        began = time.monotonic()
        try:
            path, vocab_size = self.train(sampled_documents(outs, chosen))
        except Exception as exc:  # reported on the main thread
            self.events.put(("error", exc))
            return
        self.events.put(("trained", (path, vocab_size, round(time.monotonic() - began, 3))))

    # -- results -----------------------------------------------------------------------------------
    def _on_parsed(self, parsed: ParsedPiece) -> None:
        if parsed.chunk is not None:  # made on the pool
            self.in_flight -= 1
        self.parsed[parsed.piece] = parsed
        while self.accepted in self.parsed:
            piece = self.parsed[self.accepted]
            self.accept(piece)
            self.to_pack.append(self.accepted)  # accepted in dump order, so ascending
            self.accepted += 1
        self._note_all_parsed()

    def _note_all_parsed(self) -> None:
        if self.accepted == self.planned and not self.timings.parsed:
            self.timings.parsed = self.timings.mark()

    def _on_trained(self, value: tuple[Path, int, float]) -> None:
        self.tokenizer_path, self.vocab_size, self.timings.tokenizer_train = value
        self.timings.tokenizer_ready = self.timings.mark()
        shards_dir, name = self.config.shards_dir, self.config.name
        self.writers = (ShardWriter(shards_dir, name, self.vocab_size),
                        ShardWriter(shards_dir, f"{name}_valid", self.vocab_size))  # fmt: skip
        log.info("prepare: tokenizer of %d pieces trained in %.1f s; %d of %s pieces parsed", self.vocab_size,
                 value[2], self.accepted, self.planned)  # fmt: skip

    def _on_packed(self, shard: PieceShard) -> None:
        self.in_flight -= 1
        self.packed[shard.piece] = shard
        assert self.writers is not None
        train, validation = self.writers
        while self.written in self.packed:
            packed = self.packed.pop(self.written)
            train.append(packed)
            if packed.held_out is not None:
                validation.append(packed.held_out)
            Path(self.parsed.pop(self.written).out).unlink(missing_ok=True)
            self.written += 1


def sampled_documents(outs: dict[int, Path], chosen: dict[int, set[int]]) -> Iterator[list[str]]:
    """The sampled documents, read back from their pieces' document files in dump order."""
    for piece in sorted(chosen):
        positions = chosen[piece]
        for position, segments in enumerate(read_documents_jsonl(outs[piece])):
            if position in positions:
                yield segments
