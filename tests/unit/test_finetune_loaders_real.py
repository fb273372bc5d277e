"""The loaders on every real format in ../shared/data (counts from each folder's README)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from conftest import shared_path
from sobert_trainer.finetune.examples import TaskDataError
from sobert_trainer.finetune.loaders import (
    NER_TYPES,
    RAW_TYPES,
    label_obsoletion,
    load_closed_questions,
    load_conll,
    load_question_quality,
    matching_rules,
)


def test_quality_jsonl_sample():
    result = load_question_quality(shared_path("question_quality", "processed_valid_sample.jsonl"))
    assert Counter(e.label for e in result.examples) == {"HQ": 1000, "LQ_EDIT": 1000, "LQ_CLOSE": 1000}


def test_quality_raw_kaggle_csv_is_cp1252_with_collapsed_labels():
    path = shared_path("question_quality", "raw_format_sample_binary_labels.csv")
    with pytest.raises(TaskDataError, match=r"raw_format_sample_binary_labels\.csv:\d+: byte .* is not valid utf-8"):
        load_question_quality(path)
    with pytest.raises(TaskDataError, match=r"Y 'LQ' is not one of HQ, LQ_EDIT, LQ_CLOSE"):
        load_question_quality(path, encoding="cp1252")
    result = load_question_quality(path, labels=("HQ", "LQ"), encoding="cp1252")
    assert Counter(e.label for e in result.examples) == {"HQ": 849, "LQ": 806}
    prose = [re.sub(r"\[CODE\].*?\[/CODE\]|`[^`]*`", "", e.text, flags=re.S) for e in result.examples]
    assert not [text for text in prose if "<p>" in text]  # HTML stripped; markup inside code is code


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        ("train-tiny.csv", {"open": 274, "not a real question": 115, "off topic": 78, "not constructive": 46,
                            "too localized": 24}),
        ("sample_2000.csv", {"open": 1049, "not a real question": 369, "off topic": 306, "not constructive": 206,
                             "too localized": 70}),
    ],
)  # fmt: skip
def test_closed_question_samples(name, counts):
    result = load_closed_questions(shared_path("closed_questions", name))
    assert Counter(e.label for e in result.examples) == counts
    assert len({e.id for e in result.examples}) == sum(counts.values())


def test_ner_train_and_dev_keep_only_the_20_types():
    train = load_conll(shared_path("ner", "train.txt"))
    # 14,545 sentences in the file; the Question_ID / Question_URL / Answer_to_Question_ID lines are metadata.
    assert len(train.examples) + train.skipped["metadata sentence"] == 14_545
    types = Counter(t[2:] for e in train.examples for t in e.tags if t != "O")
    assert set(types) == set(NER_TYPES)
    raw = load_conll(shared_path("ner", "train.txt"), type_map=RAW_TYPES)
    raw_types = {t[2:] for e in raw.examples for t in e.tags if t != "O"}
    assert len(raw_types) == 28 and "Data_Set_Name" not in raw_types  # Data_Set_Name is GitHub-only
    dev = load_conll(shared_path("ner", "dev.txt"))
    assert len(dev.examples) + dev.skipped["metadata sentence"] == 4_607
    assert all(len(e.tokens) == len(e.tags) for e in dev.examples)


def test_obsoletion_labeller_on_the_real_dump_sample():
    base = shared_path("stackoverflow_posts")
    result = label_obsoletion(
        str(base / "stackoverflow.com-Posts.sample.xml"), str(base / "stackoverflow.com-Comments.sample.xml")
    )
    # No comment in the sample is on an answer the sample contains (see OBSOLETION.md).
    assert result.examples == [] and result.skipped["answers without comments"] == 201
    from sobert_trainer.data.dump import RowStats, iter_comments

    comments = list(iter_comments(str(base / "stackoverflow.com-Comments.sample.xml"), RowStats()))
    fired = {c["Id"]: matching_rules(c["Text"]) for c in comments if matching_rules(c["Text"])}
    assert fired == {"199": ["no-longer"], "69373403": ["newer-versions"]}  # both judged correct by hand
