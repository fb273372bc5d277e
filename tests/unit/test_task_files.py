"""The contract's task-file readers on the heads of files, as the input preflight reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sobert_api.spec import TaskName
from sobert_api.task_files import TaskDataError, check_head

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finetune"
CLOSED_HEADER = "PostId,Title,BodyMarkdown,Tag1,Tag2,Tag3,Tag4,Tag5,OpenStatus\n"


def head(task: TaskName, data: bytes, name: str = "f.csv", *, cut: bool = False, rows: int = 100, labels=None) -> int:
    return check_head(task, data, name, labels=labels, encoding="utf-8", cut=cut, rows=rows)


@pytest.mark.parametrize(
    ("task", "fixture", "records"),
    [
        (TaskName.quality, "quality.csv", 5),
        (TaskName.quality, "quality.jsonl", 4),
        (TaskName.closed, "closed.csv", 4),
        (TaskName.obsoletion, "obsoletion-labelled.csv", 48),
    ],
)
def test_whole_fixtures_are_read_record_by_record(task, fixture, records):
    assert head(task, (FIXTURES / fixture).read_bytes(), fixture) == records


def test_a_ner_file_counts_sentences():
    assert head(TaskName.ner, (FIXTURES / "ner.txt").read_bytes(), "ner.txt") >= 2


@pytest.mark.parametrize(
    ("task", "fixture", "message"),
    [
        (TaskName.quality, "quality-bad-label.csv", r"quality-bad-label\.csv:7: Y 'MEDIUM' is not one of"),
        (TaskName.quality, "quality-missing-column.csv", r":1: missing column\(s\) Y"),
        (TaskName.quality, "quality-cp1252.csv", r":7: byte b'\\x92' is not valid utf-8"),
        (TaskName.closed, "closed-bad-label.csv", r":5: OpenStatus 'opened' is not one of"),
        (TaskName.ner, "ner-bad-columns.txt", r"TAB-separated column\(s\); expected 4"),
        (TaskName.ner, "ner-bad-type.txt", r"unknown entity type"),
    ],
)
def test_the_loaders_errors_are_the_preflights(task, fixture, message):
    with pytest.raises(TaskDataError, match=message):
        head(task, (FIXTURES / fixture).read_bytes(), fixture)


def test_a_head_cut_inside_a_quoted_field_is_checked_up_to_the_cut():
    record = '1,"A title","line one\nline two",python,,,,,open\n'
    whole = (CLOSED_HEADER + record * 3).encode()
    cut_at = whole.index(b"line two", len(CLOSED_HEADER) + 2 * len(record))  # inside the third record
    assert head(TaskName.closed, whole[:cut_at], cut=True) == 2
    with pytest.raises(TaskDataError, match="record is not valid CSV"):  # the same bytes, uncut: an error
        head(TaskName.closed, whole[:cut_at])


def test_a_cut_never_splits_a_character_or_a_line():
    line = "x\tB-Library\tx\tO\n"
    data = (line * 3 + "\n" + "é\tO\té\tO\n" * 2).encode()
    assert data[:-4].decode(errors="replace").endswith("\ufffd")  # the cut falls inside an "é"
    assert head(TaskName.ner, data[:-4], "ner.txt", cut=True) == 2  # its line is dropped, the rest read


def test_only_the_first_rows_are_read():
    good = "1,t,b,python,,,,,open\n"
    data = (CLOSED_HEADER + good * 5 + "2,t,b,python,,,,,opened\n").encode()
    assert head(TaskName.closed, data, rows=5) == 5
    with pytest.raises(TaskDataError, match=r":7: OpenStatus 'opened'"):
        head(TaskName.closed, data, rows=6)


def test_labels_from_the_spec_replace_the_tasks_own():
    data = b"Id,Title,Body,Y\n1,t,b,LQ\n"
    with pytest.raises(TaskDataError, match="'LQ' is not one of HQ, LQ_EDIT, LQ_CLOSE"):
        head(TaskName.quality, data)
    assert head(TaskName.quality, data, labels=["HQ", "LQ"]) == 1


def test_a_header_alone_has_no_records():
    with pytest.raises(TaskDataError, match=r"f\.csv: no closed records"):
        head(TaskName.closed, CLOSED_HEADER.encode())
