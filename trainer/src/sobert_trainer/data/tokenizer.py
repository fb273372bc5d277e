"""The SentencePiece-style BPE tokenizer (Hugging Face `tokenizers`) and its Megatron view.

Special tokens have fixed ids: Megatron's BERT dataset treats id 0 as padding, so `[PAD]` is 0.
`[CODE]`/`[/CODE]` mark code blocks (see html_text). The saved `tokenizer.json` is what the
Hugging Face conversion ships beside the model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from sobert_trainer.data.html_text import CODE_CLOSE, CODE_OPEN

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK, CODE_OPEN, CODE_CLOSE]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train byte-level-free, SentencePiece-style BPE (Metaspace `▁` word boundaries)."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        min_frequency=2,
        limit_alphabet=1000,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=[(CLS, cls_id), (SEP, sep_id)]
    )
    for index, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == index, f"special token {token} must have id {index}"
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


class MegatronTokenizerAdapter:
    """The attributes megatron-core's BERT dataset reads from a tokenizer (it is duck-typed)."""

    def __init__(self, tokenizer: Tokenizer, identifier: str):
        self._tokenizer = tokenizer
        self.unique_identifiers = OrderedDict(class_name=type(self).__name__, tokenizer=identifier)
        vocab = tokenizer.get_vocab()
        self.inv_vocab = {index: token for token, index in sorted(vocab.items(), key=lambda kv: kv[1])}
        self.vocab_size = len(vocab)
        self.pad = vocab[PAD]
        self.cls = vocab[CLS]
        self.sep = vocab[SEP]
        self.mask = vocab[MASK]
        self.eod = self.sep

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids


def iter_texts(documents: Iterable[list[str]]) -> Iterator[str]:
    for segments in documents:
        yield "\n".join(segments)
