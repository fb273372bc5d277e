"""Loaders of the four task datasets, on the contract's record readers (`sobert_api.task_files`);
each returns a `LoadResult` or raises `sobert_api.task_files.TaskDataError`."""

from sobert_api.task_files import CLOSED_LABELS, MERGED_TYPES, NER_TYPES, OBSOLETION_LABELS, QUALITY_LABELS, RAW_TYPES
from sobert_trainer.finetune.loaders.closed import load_closed_questions
from sobert_trainer.finetune.loaders.ner import load_conll
from sobert_trainer.finetune.loaders.obsoletion import (
    RULES,
    label_obsoletion,
    load_labelled_csv,
    matching_rules,
    rule_hits,
)
from sobert_trainer.finetune.loaders.quality import load_question_quality

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
