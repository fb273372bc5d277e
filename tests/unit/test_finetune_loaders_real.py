"""The loaders on every real format in ../shared/data (counts from each folder's README or computed here)."""

from __future__ import annotations

import csv
import re
from collections import Counter

import pytest

from conftest import shared_path
from sobert_api.task_files import TaskDataError
from sobert_trainer.data.dump import RowStats, iter_comments
from sobert_trainer.finetune.loaders import (
    NER_TYPES,
    RAW_TYPES,
    label_obsoletion,
    load_closed_questions,
    load_conll,
    load_question_quality,
    matching_rules,
    rule_hits,
)

# -- question quality ----------------------------------------------------------------------------


def test_quality_jsonl_sample():
    result = load_question_quality(shared_path("question_quality", "processed_valid_sample.jsonl"))
    assert Counter(e.label for e in result.examples) == {"HQ": 1000, "LQ_EDIT": 1000, "LQ_CLOSE": 1000}
    assert result.skipped == {}
    assert [e.id for e in result.examples] == sorted((e.id for e in result.examples), key=int)  # source_row


def test_quality_raw_kaggle_csv_is_cp1252_with_collapsed_labels():
    path = shared_path("question_quality", "raw_format_sample_binary_labels.csv")
    # The first non-UTF-8 byte (0xB4, a cp1252 acute accent used as an apostrophe) is on line 310.
    with pytest.raises(
        TaskDataError, match=r"raw_format_sample_binary_labels\.csv:310: byte b'\\xb4' is not valid utf-8"
    ):
        load_question_quality(path)
    # Decoded right, the collapsed label LQ is refused at the first LQ record (line 28) ...
    with pytest.raises(TaskDataError, match=r"\.csv:28: Y 'LQ' is not one of HQ, LQ_EDIT, LQ_CLOSE"):
        load_question_quality(path, encoding="cp1252")
    # ... and accepted when the caller says that is the label set.
    result = load_question_quality(path, labels=("HQ", "LQ"), encoding="cp1252")
    assert len(result.examples) == 1655 and result.skipped == {}
    assert Counter(e.label for e in result.examples) == {"HQ": 849, "LQ": 806}
    assert result.examples[0].id == "34555135" and result.examples[0].text.startswith("Pandas: read_html\n")
    prose = [re.sub(r"\[CODE\].*?\[/CODE\]|`[^`]*`", "", e.text, flags=re.S) for e in result.examples]
    assert not [text for text in prose if "<p>" in text or "&lt;" in text]  # markup and entities gone


# -- closed questions ----------------------------------------------------------------------------


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
    assert Counter(e.label for e in result.examples) == counts and result.skipped == {}
    assert len({e.id for e in result.examples}) == sum(counts.values())
    assert not [e for e in result.examples if "\r" in e.text]  # sample_2000's CRLF bodies normalised


def test_closed_question_text_ignores_post_closed_date_on_real_rows(tmp_path):
    source = shared_path("closed_questions", "train-tiny.csv")
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sum(bool(r["PostClosedDate"]) for r in rows) == 537 - 274  # non-empty exactly for the closed ones
    blanked = tmp_path / "blanked.csv"
    with open(blanked, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "PostClosedDate": ""} for r in rows)
    assert load_closed_questions(blanked).examples == load_closed_questions(source).examples


# -- StackOverflowNER ----------------------------------------------------------------------------

# Computed with this loader: sentences kept; B- counts per merged type.
TRAIN_ENTITIES = {
    "Algorithm": 41, "Application": 1298, "Class": 1352, "Code_Block": 832, "Data_Structure": 626,
    "Data_Type": 418, "Device": 199, "File_Name": 321, "File_Type": 367, "Function": 781, "HTML_XML_Tag": 206,
    "Language": 736, "Library": 735, "Operating_System": 171, "User_Interface_Element": 932, "User_Name": 88,
    "Value": 700, "Variable": 1120, "Version": 257, "Website": 106,
}  # fmt: skip


def test_ner_train_keeps_only_the_20_types():
    train = load_conll(shared_path("ner", "train.txt"))
    # 14,545 sentences in the file: 741 Question_ID + 1,638 Question_URL + 897 Answer_to_Question_ID
    # metadata sentences and 1,884 + 122 - 2 code/output placeholders are dropped.
    assert train.skipped == {"metadata sentence": 3276, "placeholder sentence": 2004}
    assert len(train.examples) == 14_545 - 3276 - 2004 == 9265
    assert sum(len(e.tokens) for e in train.examples) == 137_064
    assert all(len(e.tokens) == len(e.tags) for e in train.examples)
    assert Counter(t[2:] for e in train.examples for t in e.tags if t.startswith("B-")) == TRAIN_ENTITIES
    assert {t[2:] for e in train.examples for t in e.tags if t != "O"} == set(NER_TYPES)
    # Organization (23) merged into Website (83); Class = Library_Class 1123 + Class_Name 229.
    assert TRAIN_ENTITIES["Website"] == 83 + 23 and TRAIN_ENTITIES["Class"] == 1123 + 229
    raw = load_conll(shared_path("ner", "train.txt"), type_map=RAW_TYPES)
    raw_types = {t[2:] for e in raw.examples for t in e.tags if t != "O"}
    assert len(raw_types) == 28 and "Data_Set_Name" not in raw_types  # Data_Set_Name is GitHub-only


def test_ner_dev():
    dev = load_conll(shared_path("ner", "dev.txt"))
    assert dev.skipped == {"metadata sentence": 1072, "placeholder sentence": 599}
    assert len(dev.examples) + 1072 + 599 == 4607
    entities = Counter(t[2:] for e in dev.examples for t in e.tags if t.startswith("B-"))
    assert set(entities) == set(NER_TYPES) and sum(entities.values()) == 3683


# -- obsoletion ----------------------------------------------------------------------------------


def test_obsoletion_labeller_on_the_real_dump_sample():
    base = shared_path("stackoverflow_posts")
    posts, comments = (
        str(base / "stackoverflow.com-Posts.sample.xml"),
        str(base / "stackoverflow.com-Comments.sample.xml"),
    )
    result = label_obsoletion(posts, comments)
    # None of the 398 comments is on one of the 201 answers in the Posts slice (see OBSOLETION.md).
    assert result.examples == [] and result.skipped == {"answers without comments": 201}
    assert rule_hits(comments) == {
        "deprecated": 0, "no-longer": 1, "not-anymore": 0, "newer-versions": 1, "outdated": 0,
        "removed-in-version": 0, "since-version": 0,
    }  # fmt: skip
    rows = list(iter_comments(comments, RowStats()))
    fired = {c["Id"]: matching_rules(c["Text"]) for c in rows if matching_rules(c["Text"])}
    assert fired == {"199": ["no-longer"], "69373403": ["newer-versions"]}  # both judged correct by hand
