"""The task loaders on the project's own fixtures: exact texts, labels, skips and error lines."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from sobert_api.task_files import TaskDataError
from sobert_trainer.finetune.examples import LoadResult, TextExample, TokenExample
from sobert_trainer.finetune.loaders import (
    MERGED_TYPES,
    NER_TYPES,
    RAW_TYPES,
    RULES,
    label_obsoletion,
    load_closed_questions,
    load_conll,
    load_labelled_csv,
    load_question_quality,
    matching_rules,
    rule_hits,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "finetune"


# -- question quality ----------------------------------------------------------------------------


def test_quality_csv_html_to_text_with_code_and_tags():
    result = load_question_quality(FIXTURES / "quality.csv")
    assert isinstance(result, LoadResult)
    assert [(e.id, e.label) for e in result.examples] == [
        ("101", "HQ"),
        ("102", "LQ_CLOSE"),
        ("103", "LQ_EDIT"),
        ("105", "LQ_EDIT"),
    ]
    assert result.examples[0].text == (
        "How do I reverse a list in Python?\nI have a list and want it backwards.\n"
        "[CODE]\nxs = [1, 2, 3]\nprint(xs[::-1])\n[/CODE]\nIs `reversed()` better?\npython list"
    )
    assert result.examples[2].text == 'Title with "quotes", and a comma\nEdited body\nc#'
    # A body without HTML is plain text: `<stdio.h>` survives and code keeps its indentation.
    assert result.examples[3].text == (
        "Why does this crash\nmy code:\n#include <stdio.h>\n    int main() { char *p = 0; *p = 1; }\nc"
    )
    assert result.skipped == {"empty text": 1}  # row 104: no title, no body


def test_quality_errors_name_file_line_and_what_was_expected(tmp_path):
    # Record 102 starts on line 7: record 101's quoted body spans lines 2-6.
    with pytest.raises(
        TaskDataError, match=r"quality-bad-label\.csv:7: Y 'MEDIUM' is not one of HQ, LQ_EDIT, LQ_CLOSE$"
    ):
        load_question_quality(FIXTURES / "quality-bad-label.csv")
    with pytest.raises(TaskDataError, match=r"quality-cp1252\.csv:7: byte b'\\x92' is not valid utf-8"):
        load_question_quality(FIXTURES / "quality-cp1252.csv")
    cp1252 = load_question_quality(FIXTURES / "quality-cp1252.csv", encoding="cp1252")
    assert cp1252.examples[1].text == "help pls\nmy code don\u2019t work\njava"
    with pytest.raises(TaskDataError, match=r"quality-missing-column\.csv:1: missing column\(s\) Y \(header has"):
        load_question_quality(FIXTURES / "quality-missing-column.csv")
    with pytest.raises(TaskDataError, match="unknown encoding 'latin-99'"):
        load_question_quality(FIXTURES / "quality.csv", encoding="latin-99")
    unterminated = tmp_path / "unterminated.csv"
    unterminated.write_text('Id,Title,Body,Tags,CreationDate,Y\n1,a,b,<c>,d,HQ\n2,a,"b\nc,<c>,d,HQ\n')
    with pytest.raises(TaskDataError, match=r"unterminated\.csv:3: record is not valid CSV"):
        load_question_quality(unterminated)
    short = tmp_path / "short.csv"
    short.write_text("Id,Title,Body,Tags,CreationDate,Y\n1,a,b,<c>,HQ\n")
    with pytest.raises(TaskDataError, match=r"short\.csv:2: 5 fields, expected 6"):
        load_question_quality(short)


def test_quality_jsonl_keeps_records_whole_across_unicode_line_separators():
    result = load_question_quality(str(FIXTURES / "quality.jsonl"))  # str paths work too
    assert [(e.id, e.label) for e in result.examples] == [("7", "HQ"), ("9", "LQ_EDIT"), ("13", "LQ_CLOSE")]
    assert result.examples[1].text == "line one\u2028still the same record"
    assert result.skipped == {"empty text": 1}


def test_quality_jsonl_errors(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"text": "a", "rating": "HQ"}\n\n{"text": "b"}\n')
    with pytest.raises(TaskDataError, match=r"q\.jsonl:3: missing key\(s\) rating$"):
        load_question_quality(path)
    path.write_text('{"text": "a", "rating": "HQ"}\n{"text": "b", "rating": "MQ"}\n')
    with pytest.raises(TaskDataError, match=r"q\.jsonl:2: rating 'MQ' is not one of HQ, LQ_EDIT, LQ_CLOSE"):
        load_question_quality(path)
    path.write_text('{"text": "a", "rating": "HQ"}\n{"text": "b", "rating": \n')
    with pytest.raises(TaskDataError, match=r"q\.jsonl:2: not valid JSON"):
        load_question_quality(path)
    path.write_text('[{"text": "a", "rating": "HQ"}]\n')
    with pytest.raises(TaskDataError, match=r"q\.jsonl:1: a JSON array; expected JSON Lines"):
        load_question_quality(path)


def test_quality_layout_sniffed_from_the_first_character_without_a_known_suffix(tmp_path):
    shutil.copy(FIXTURES / "quality.jsonl", tmp_path / "ratings.txt")
    shutil.copy(FIXTURES / "quality.csv", tmp_path / "questions")
    assert len(load_question_quality(tmp_path / "ratings.txt").examples) == 3
    assert len(load_question_quality(tmp_path / "questions").examples) == 4


# -- closed questions ----------------------------------------------------------------------------


def test_closed_questions_text_is_title_markdown_and_tags():
    result = load_closed_questions(FIXTURES / "closed.csv")
    assert [(e.id, e.label) for e in result.examples] == [
        ("1", "not constructive"),
        ("2", "open"),
        ("3", "not a real question"),
        ("4", "too localized"),
    ]
    # The quoted body keeps its CRLF-separated lines (as LF) and its 4-space code indentation.
    assert result.examples[1].text == (
        'Segfault in strcpy\nMy code:\n\n    char b[4];\n    strcpy(b, "hello");\n\ncrashes.\nc strings'
    )
    # Record 1's quoted body spans lines 2-4, so record 2 (label 'opened') starts on line 5.
    with pytest.raises(TaskDataError, match=r"closed-bad-label\.csv:5: OpenStatus 'opened' is not one of open, "):
        load_closed_questions(FIXTURES / "closed-bad-label.csv")


def test_closed_questions_text_never_depends_on_the_leaking_or_metadata_columns(tmp_path):
    with open(FIXTURES / "closed.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sum(bool(row["PostClosedDate"]) for row in rows) == 3  # set exactly for the closed ones
    changed = tmp_path / "changed.csv"
    with open(changed, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:  # everything but the text columns and the label rewritten
            row.update(PostClosedDate="" if row["PostClosedDate"] else "12/31/2011 23:59:59")
            row.update(PostCreationDate="01/01/2000 00:00:00", OwnerUserId="999", ReputationAtPostCreation="1")
            row.update(OwnerCreationDate="01/01/1999 00:00:00", OwnerUndeletedAnswerCountAtPostTime="0")
            writer.writerow(row)
    original, rewritten = load_closed_questions(FIXTURES / "closed.csv"), load_closed_questions(changed)
    assert rewritten.examples == original.examples
    assert not [e for e in original.examples if "2010" in e.text or "/20" in e.text]  # no date leaked in


def test_closed_questions_missing_column(tmp_path):
    path = tmp_path / "closed.csv"
    path.write_text("PostId,Title,BodyMarkdown,Tag1,OpenStatus\n1,t,b,x,open\n")
    with pytest.raises(TaskDataError, match=r"closed\.csv:1: missing column\(s\) Tag2, Tag3, Tag4, Tag5"):
        load_closed_questions(path)


# -- StackOverflowNER ----------------------------------------------------------------------------


def test_ner_label_set_is_the_papers_20_types():
    assert NER_TYPES == (
        "Algorithm", "Application", "Class", "Code_Block", "Data_Structure", "Data_Type", "Device", "File_Name",
        "File_Type", "Function", "HTML_XML_Tag", "Language", "Library", "Operating_System",
        "User_Interface_Element", "User_Name", "Value", "Variable", "Version", "Website",
    )  # fmt: skip
    assert len(MERGED_TYPES) == 29  # 28 in the StackOverflow files + GitHub-only Data_Set_Name
    assert [raw for raw, merged in MERGED_TYPES.items() if merged is None] == [
        "Output_Block", "Error_Name", "Keyboard_IP", "Licence", "Data_Set_Name",
    ]  # fmt: skip
    assert {raw for raw, merged in MERGED_TYPES.items() if merged == "Website"} == {"Website", "Organization"}


def test_conll_maps_tags_and_drops_metadata_and_placeholders():
    result = load_conll(FIXTURES / "ner.txt")
    assert result.skipped == {"metadata sentence": 2, "placeholder sentence": 1}
    assert [e.id for e in result.examples] == ["ner.txt:9", "ner.txt:14", "ner.txt:32"]
    first, second, third = result.examples
    assert first == TokenExample("ner.txt:9", ("I", "use", "numpy", "."), ("O", "O", "B-Library", "O"))
    assert second.tags == ("O", "B-Class", "I-Class", "O", "B-Operating_System", "O", "B-Website")
    # The last sentence has no blank line after it; an I- after O stays I-; Error_Name -> O.
    assert third.tokens == ("then", "my_func", "prints", "Traceback")
    assert third.tags == ("O", "I-Function", "O", "O")
    raw = load_conll(FIXTURES / "ner.txt", type_map=RAW_TYPES)
    assert raw.examples[1].tags[-1] == "B-Organization" and raw.examples[2].tags == (
        "O",
        "I-Function_Name",
        "O",
        "B-Error_Name",
    )


def test_conll_errors(tmp_path):
    with pytest.raises(TaskDataError, match=r"ner-bad-columns\.txt:6: 2 TAB-separated column\(s\); expected 4"):
        load_conll(FIXTURES / "ner-bad-columns.txt")
    with pytest.raises(TaskDataError, match=r"ner-bad-type\.txt:7: unknown entity type 'Framework'"):
        load_conll(FIXTURES / "ner-bad-type.txt")
    spaces = tmp_path / "spaces.txt"  # upstream's train_merged_labels.txt has space-separated lines
    spaces.write_text("I\tO\tI\tO\nArrayList B-Class ArrayList O\n")
    with pytest.raises(TaskDataError, match=r"spaces\.txt:2: 1 TAB-separated column"):
        load_conll(spaces)
    bad_tag = tmp_path / "tag.txt"
    bad_tag.write_text("I\tO\tI\tO\n\nx\tS-Value\tx\tO\n")
    with pytest.raises(TaskDataError, match=r"tag\.txt:3: entity tag 'S-Value' is not O, B-<type> or I-<type>"):
        load_conll(bad_tag)


def test_token_example_needs_a_tag_per_token():
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        TokenExample("x", ("a", "b"), ("O",))


# -- obsoletion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comment", "rules"),
    [
        ("This method is deprecated, use bar().", ["deprecated"]),
        ("This is not deprecated at all", []),
        ("Note that urlopen isn't deprecated.", []),
        ("No longer works with the v3 API.", ["no-longer"]),
        ("This is no longer needed in Python 3.6", ["no-longer"]),
        ("It doesn't work anymore in Chrome 80", ["not-anymore"]),
        ("This isn't supported any more.", ["not-anymore"]),
        ("Doesn't work on the latest versions of Android", ["newer-versions"]),
        ("This answer is outdated", ["outdated"]),
        ("Outdated. Use fetch().", ["outdated"]),
        ("I don't think this is outdated.", []),
        ("this attitude is harmful and obsolete", []),  # 'obsolete' about something else
        ("The flag was removed in version 5.0", ["removed-in-version"]),
        ("It wasn't removed in Python 3, only moved.", []),
        ("I removed the line in 2 places and it works", []),
        ("As of 3.2 use pathlib instead", ["since-version"]),
        ("Since Django 1.9 this was replaced by path()", ["since-version"]),
        ("I have used this since 2010 and nothing changed", []),  # a year is not a release
        ("This doesn't work with WPF.", []),  # a different platform, not a newer one
        ("Thanks, works now!", []),
    ],
)
def test_obsoletion_rules(comment, rules):
    assert matching_rules(comment) == rules


def test_rules_are_named_and_documented():
    assert len({rule.name for rule in RULES}) == len(RULES)
    assert all(rule.rationale for rule in RULES)
    doc = (
        Path(__file__).resolve().parents[2] / "trainer/src/sobert_trainer/finetune/loaders/OBSOLETION.md"
    ).read_text()
    assert all(f"`{rule.name}`" in doc for rule in RULES)


def test_weak_labels_from_a_dump():
    posts, comments = str(FIXTURES / "obsoletion-Posts.xml"), str(FIXTURES / "obsoletion-Comments.xml")
    result = label_obsoletion(posts, comments)
    # 11 "gone in Python 3 ... outdated"; 12 praise and a negated "outdated"; 13 a negated "deprecated";
    # 14 no comments (no label); 15 "removed in jQuery 1.9"; 16 empty body; 17 "deprecated ... removed in PHP 7".
    assert [(e.id, e.label) for e in result.examples] == [
        ("11", "obsolete"),
        ("12", "current"),
        ("13", "current"),
        ("15", "obsolete"),
        ("17", "obsolete"),
    ]
    assert result.skipped == {"answers without comments": 1, "empty text": 1, "bad comment rows": 1}
    assert result.examples[0].text == "Use `urllib2.urlopen`:\n[CODE]\nurllib2.urlopen(u).read()\n[/CODE]"
    # Comment 6 ("This question is deprecated.") is on the question: counted by rule, labels nothing.
    assert rule_hits(comments) == {
        "deprecated": 2, "no-longer": 0, "not-anymore": 1, "newer-versions": 0, "outdated": 1,
        "removed-in-version": 3, "since-version": 0,
    }  # fmt: skip


def test_labelled_csv(tmp_path):
    result = load_labelled_csv(FIXTURES / "obsoletion-labelled.csv")
    assert len(result.examples) == 48 and result.skipped == {}
    assert sorted(e.label for e in result.examples).count("obsolete") == 24
    path = tmp_path / "labels.csv"
    path.write_text('post_id,text,label\n1,old api,1\n2,"new\napi",0\n3,what,maybe\n')
    with pytest.raises(TaskDataError, match=r"labels\.csv:5: label 'maybe' is not one of current, obsolete, 0, 1"):
        load_labelled_csv(path)
    path.write_text("post_id,text,label\n1,old api,1\n2,new api,Current\n3, ,obsolete\n")
    loaded = load_labelled_csv(path)
    assert loaded.examples == [TextExample("1", "old api", "obsolete"), TextExample("2", "new api", "current")]
    assert loaded.skipped == {"empty text": 1}
    path.write_text("post_id,text\n1,old api\n")
    with pytest.raises(TaskDataError, match=r"labels\.csv:1: missing column\(s\) label"):
        load_labelled_csv(path)
    path.write_text("post_id,text,label\n,old api,1\n")
    with pytest.raises(TaskDataError, match=r"labels\.csv:2: post_id is empty"):
        load_labelled_csv(path)
