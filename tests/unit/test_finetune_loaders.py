"""The task loaders on the project's own fixtures: exact texts, labels, skips and error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from sobert_trainer.finetune.examples import TaskDataError
from sobert_trainer.finetune.loaders import (
    NER_TYPES,
    label_obsoletion,
    load_closed_questions,
    load_conll,
    load_labelled_csv,
    load_question_quality,
    matching_rules,
)
from sobert_trainer.finetune.loaders.closed import example_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finetune"


def test_quality_csv_html_to_text_with_code_and_tags():
    result = load_question_quality(FIXTURES / "quality.csv")
    assert [(e.id, e.label) for e in result.examples] == [("101", "HQ"), ("102", "LQ_CLOSE"), ("103", "LQ_EDIT")]
    first = result.examples[0].text
    assert first.startswith("How do I reverse a list in Python?\nI have a list and want it backwards.")
    assert "[CODE]\nxs = [1, 2, 3]\nprint(xs[::-1])\n[/CODE]" in first and "`reversed()`" in first
    assert first.endswith("python list") and "<p>" not in first
    assert result.examples[2].text.startswith('Title with "quotes", and a comma')
    assert result.skipped == {"empty text": 1}


def test_quality_errors_name_file_line_and_what_was_expected():
    with pytest.raises(
        TaskDataError, match=r"quality-bad-label\.csv:7: Y 'MEDIUM' is not one of HQ, LQ_EDIT, LQ_CLOSE"
    ):
        load_question_quality(FIXTURES / "quality-bad-label.csv")
    with pytest.raises(TaskDataError, match=r"quality-cp1252\.csv:7: byte b'\\x92' is not valid utf-8"):
        load_question_quality(FIXTURES / "quality-cp1252.csv")
    assert "don\u2019t" in load_question_quality(FIXTURES / "quality-cp1252.csv", encoding="cp1252").examples[1].text
    with pytest.raises(TaskDataError, match=r"quality-missing-column\.csv:1: missing column\(s\) Y"):
        load_question_quality(FIXTURES / "quality-missing-column.csv")
    with pytest.raises(TaskDataError, match="unknown encoding 'latin-99'"):
        load_question_quality(FIXTURES / "quality.csv", encoding="latin-99")


def test_quality_jsonl_keeps_records_whole_across_unicode_line_separators():
    result = load_question_quality(FIXTURES / "quality.jsonl")
    assert [(e.id, e.label) for e in result.examples] == [("7", "HQ"), ("9", "LQ_EDIT"), ("13", "LQ_CLOSE")]
    assert result.examples[1].text == "line one\u2028still the same record"
    assert result.skipped == {"empty text": 1}


def test_closed_questions_never_read_the_leaking_column():
    # Record 1's body spans lines 2-4 (quoted CRLFs), so record 2 starts on line 5.
    result = load_closed_questions(FIXTURES / "closed.csv")
    assert [e.label for e in result.examples] == ["not constructive", "open", "not a real question", "too localized"]
    code = result.examples[1].text
    assert code == 'Segfault in strcpy\nMy code:\n\n    char b[4];\n    strcpy(b, "hello");\n\ncrashes.\nc strings'
    row = {"Title": "T", "BodyMarkdown": "B", "Tag1": "x", "PostClosedDate": "01/01/2010", "OpenStatus": "off topic"}
    assert example_text(row) == example_text({**row, "PostClosedDate": "", "OpenStatus": "open"}) == "T\nB\nx"
    with pytest.raises(TaskDataError, match=r"closed-bad-label\.csv:5: OpenStatus 'opened' is not one of"):
        load_closed_questions(FIXTURES / "closed-bad-label.csv")


def test_conll_merges_to_the_20_types_and_drops_metadata():
    assert len(NER_TYPES) == 20 and "Class" in NER_TYPES and "Organization" not in NER_TYPES
    result = load_conll(FIXTURES / "ner.txt")
    assert result.skipped == {"metadata sentence": 1}
    first, second = result.examples
    assert first.tokens == ("I", "use", "numpy", ".") and first.tags == ("O", "O", "B-Library", "O")
    assert second.tags == ("O", "B-Class", "I-Class", "O", "B-Operating_System", "O", "O")  # Organization -> O
    assert second.id == "ner.txt:10"


def test_conll_errors():
    with pytest.raises(TaskDataError, match=r"ner-bad-columns\.txt:6: expected 4 TAB-separated columns"):
        load_conll(FIXTURES / "ner-bad-columns.txt")
    with pytest.raises(TaskDataError, match=r"ner-bad-type\.txt:7: unknown entity type 'Framework'"):
        load_conll(FIXTURES / "ner-bad-type.txt")


@pytest.mark.parametrize(
    ("comment", "rules"),
    [
        ("This method is deprecated since 2.0", ["deprecated"]),
        ("This is not deprecated at all", []),
        ("It doesn't work anymore in Chrome 80", ["not-anymore"]),
        ("No longer works with the v3 API.", ["no-longer"]),
        ("Doesn't work on the latest versions of Android", ["newer-versions"]),
        ("This answer is outdated", ["outdated"]),
        ("this attitude is harmful and obsolete", []),
        ("The flag was removed in version 5.0", ["removed-in-version"]),
        ("As of 3.2 use pathlib instead", ["as-of-version"]),
        ("This doesn't work with WPF.", []),
        ("Thanks, works now!", []),
    ],
)
def test_obsoletion_rules(comment, rules):
    assert matching_rules(comment) == rules


def test_weak_labels_from_a_dump():
    result = label_obsoletion(str(FIXTURES / "obsoletion-Posts.xml"), str(FIXTURES / "obsoletion-Comments.xml"))
    labels = {e.id: e.label for e in result.examples}
    # 11: "outdated"; 12: praise; 13: a negated "deprecated"; 14: no comments (no label); 15: two rules.
    assert labels == {"11": "obsolete", "12": "current", "13": "current", "15": "obsolete"}
    # Post 11's "gone in Python 3 ... outdated" fires two rules; post 15's "removed in jQuery 1.9" two.
    assert result.skipped == {"answers without comments": 1, "rule outdated": 1, "rule removed-in-version": 2,
                              "rule not-anymore": 1}  # fmt: skip
    assert "[CODE]\nurllib2.urlopen(u).read()\n[/CODE]" in next(e.text for e in result.examples if e.id == "11")


def test_labelled_csv(tmp_path):
    result = load_labelled_csv(FIXTURES / "obsoletion-labelled.csv")
    assert len(result.examples) == 48
    assert sorted({e.label for e in result.examples}) == ["current", "obsolete"]
    path = tmp_path / "labels.csv"
    path.write_text("post_id,text,label\n1,old api,1\n2,new api,0\n3,what,maybe\n")
    with pytest.raises(TaskDataError, match=r"labels\.csv:4: label 'maybe' is not one of current, obsolete, 0, 1"):
        load_labelled_csv(path)
    path.write_text("post_id,text,label\n1,old api,1\n2,new api,0\n")
    assert [e.label for e in load_labelled_csv(path).examples] == ["obsolete", "current"]
