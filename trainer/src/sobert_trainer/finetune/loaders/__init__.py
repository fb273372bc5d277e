"""Loaders of the four task datasets; each returns a `LoadResult` or raises `TaskDataError`."""

from sobert_trainer.finetune.loaders.closed import CLOSED_LABELS, load_closed_questions
from sobert_trainer.finetune.loaders.ner import MERGED_TYPES, NER_TYPES, RAW_TYPES, load_conll
from sobert_trainer.finetune.loaders.obsoletion import (
    OBSOLETION_LABELS,
    RULES,
    label_obsoletion,
    load_labelled_csv,
    matching_rules,
    rule_hits,
)
from sobert_trainer.finetune.loaders.quality import QUALITY_LABELS, load_question_quality

__all__ = [
    "CLOSED_LABELS",
    "MERGED_TYPES",
    "NER_TYPES",
    "OBSOLETION_LABELS",
    "QUALITY_LABELS",
    "RAW_TYPES",
    "RULES",
    "label_obsoletion",
    "load_closed_questions",
    "load_conll",
    "load_labelled_csv",
    "load_question_quality",
    "matching_rules",
    "rule_hits",
]
