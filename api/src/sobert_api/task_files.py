"""The finetune task files' formats: the records of each task's file, parsed and checked.

A run names its task files in `finetune.tasks.<task>.train` / `.validation`. What a file of each
task must hold is part of the run's contract: the trainer's loaders (`sobert_trainer.finetune.
loaders`) build their examples from the records read here, and the submit and controller
preflights (`sobert_operator.input_check`) read the head of each file through the same readers,
so a file the preflight passes parses in the finetune stage, and one it refuses is refused
before anything is spent. Each error names the file, the line, the field and what was expected.

Task files are small (megabytes): each is decoded whole, and a bad byte is reported with its
physical line, counted in LF-terminated lines as an editor shows them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sobert_api.spec import TaskName


class TaskDataError(ValueError):
    """Bad task input; the message names the file, the line, the field and what was expected."""


QUALITY_LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")
QUALITY_CSV_COLUMNS = ("Id", "Title", "Body", "Y")
CLOSED_LABELS = ("open", "not a real question", "not constructive", "off topic", "too localized")
CLOSED_TAG_COLUMNS = ("Tag1", "Tag2", "Tag3", "Tag4", "Tag5")
CLOSED_TEXT_COLUMNS = ("Title", "BodyMarkdown", *CLOSED_TAG_COLUMNS)
CLOSED_COLUMNS = ("PostId", *CLOSED_TEXT_COLUMNS, "OpenStatus")
OBSOLETION_LABELS = ("current", "obsolete")
OBSOLETION_LABEL_ALIASES = {"0": "current", "1": "obsolete"}
OBSOLETION_COLUMNS = ("post_id", "text", "label")

# StackOverflowNER's annotated entity types and the 20 the paper evaluates (the rationale is in
# the trainer's `finetune/loaders/ner.py`, with the authors' reader it follows).
MERGED_TYPES: dict[str, str | None] = {
    "Algorithm": "Algorithm",
    "Application": "Application",
    "Class_Name": "Class",
    "Library_Class": "Class",
    "Code_Block": "Code_Block",
    "Data_Structure": "Data_Structure",
    "Data_Type": "Data_Type",
    "Device": "Device",
    "File_Name": "File_Name",
    "File_Type": "File_Type",
    "Function_Name": "Function",
    "Library_Function": "Function",
    "HTML_XML_Tag": "HTML_XML_Tag",
    "Language": "Language",
    "Library": "Library",
    "Operating_System": "Operating_System",
    "User_Interface_Element": "User_Interface_Element",
    "User_Name": "User_Name",
    "Value": "Value",
    "Variable_Name": "Variable",
    "Library_Variable": "Variable",
    "Version": "Version",
    "Website": "Website",
    "Organization": "Website",
    # Annotated, but not among the 20 evaluated types:
    "Output_Block": None,
    "Error_Name": None,
    "Keyboard_IP": None,
    "Licence": None,
    "Data_Set_Name": None,  # GitHub test set only
}
"""Raw annotated type -> one of the 20 evaluated types, or None for O."""
NER_TYPES: tuple[str, ...] = tuple(sorted({t for t in MERGED_TYPES.values() if t}))
RAW_TYPES: dict[str, str | None] = {t: t for t in MERGED_TYPES}
"""Identity mapping: every annotated type kept as is (for analysis, not the paper's setup)."""


# -- decoding and CSV ----------------------------------------------------------------------------


def decode(data: bytes, name: str, encoding: str) -> str:
    """A task file's bytes decoded (a UTF-8 BOM dropped); a bad byte raises with its line."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TaskDataError(
            f"{name}:{line}: byte {data[exc.start : exc.start + 1]!r} is not valid {encoding} "
            f"(pass the file's encoding, e.g. encoding='cp1252')"
        ) from None
    except LookupError:
        raise TaskDataError(f"{name}: unknown encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")


def read_text(path: str | Path, encoding: str) -> str:
    """A local task file, whole and decoded."""
    return decode(Path(path).read_bytes(), str(path), encoding)


def physical_lines(text: str) -> list[str]:
    """Lines split on LF only (CRLF tolerated). `str.splitlines` would also split on U+2028,
    U+0085, ..., which occur inside real StackOverflow text and would cut a record in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


_CUT_RECORD = "unexpected end of data"  # csv's strict-mode error for a quote left open at the end


def csv_records(
    text: str, name: str, required: Sequence[str], *, cut: bool = False
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line the record starts on, row) for each CSV record, after checking the header.

    Quoted fields may span lines, so the start line is the reader's line count after the
    previous record plus one (lines end at LF only, as in `physical_lines`). `strict` quoting
    turns a stray or unterminated quote into an error at the record it starts, instead of a row
    that silently swallows the rest of the file. `cut`: `text` is the head of a longer file, so
    a quote left open at its end is the cut, not an error (the records before it are checked).
    """
    reader = csv.reader(io.StringIO(text, newline="\n"), strict=True)
    try:
        header = [column.strip() for column in next(reader)]
    except StopIteration:
        raise TaskDataError(f"{name}: empty file (expected a header with {', '.join(required)})") from None
    except csv.Error as exc:
        raise TaskDataError(f"{name}:1: header is not valid CSV ({exc})") from None
    missing = [column for column in required if column not in header]
    if missing:
        raise TaskDataError(
            f"{name}:1: missing column(s) {', '.join(missing)} (header has {', '.join(header) or 'nothing'})"
        )
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if cut and _CUT_RECORD in str(exc):
                return
            raise TaskDataError(f"{name}:{start}: record is not valid CSV ({exc})") from None
        if values:  # a blank line between records is not a record
            if len(values) != len(header):
                raise TaskDataError(f"{name}:{start}: {len(values)} fields, expected {len(header)} as in the header")
            yield start, dict(zip(header, values, strict=True))
        start = reader.line_num + 1


def check_label(name: str, line: int, field: str, value: str, labels: Sequence[str]) -> str:
    """`value` if it is one of `labels`, else an error naming the file, line, field and label set."""
    if value not in labels:
        raise TaskDataError(f"{name}:{line}: {field} {value!r} is not one of {', '.join(labels)}")
    return value


# -- each task's records -------------------------------------------------------------------------


def closed_records(
    text: str, name: str, labels: Sequence[str] = CLOSED_LABELS, *, cut: bool = False
) -> Iterator[tuple[int, dict[str, str], str]]:
    """(line, row, label) of a Kaggle 2012 closed-questions CSV, labelled by `OpenStatus`."""
    for line, row in csv_records(text, name, CLOSED_COLUMNS, cut=cut):
        yield line, row, check_label(name, line, "OpenStatus", row["OpenStatus"].strip(), labels)


def quality_is_json_lines(name: str, text: str) -> bool:
    """A quality file's layout, by suffix (`.csv`; `.jsonl` / `.json`), else by its first
    character (`{` opens a JSON Lines file)."""
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return True
    if suffix == ".csv":
        return False
    return text.lstrip().startswith("{")


def quality_csv_records(
    text: str, name: str, labels: Sequence[str] = QUALITY_LABELS, *, cut: bool = False
) -> Iterator[tuple[int, dict[str, str], str]]:
    """(line, row, label) of the Kaggle quality CSV (`Id,Title,Body,Tags,CreationDate,Y`)."""
    for line, row in csv_records(text, name, QUALITY_CSV_COLUMNS, cut=cut):
        yield line, row, check_label(name, line, "Y", row["Y"].strip(), labels)


def quality_json_records(
    text: str, name: str, labels: Sequence[str] = QUALITY_LABELS
) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line, record, label) of a quality JSON Lines file: objects with a string `text` and a
    `rating`."""
    if text.lstrip().startswith("["):
        raise TaskDataError(f"{name}:1: a JSON array; expected JSON Lines (one object with text and rating per line)")
    for number, raw in enumerate(physical_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TaskDataError(f"{name}:{number}: not valid JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(record, dict):
            raise TaskDataError(f"{name}:{number}: a JSON {type(record).__name__}; expected an object")
        missing = [key for key in ("text", "rating") if key not in record]
        if missing:
            raise TaskDataError(f"{name}:{number}: missing key(s) {', '.join(missing)}")
        label = check_label(name, number, "rating", str(record["rating"]).strip(), labels)
        if not isinstance(record["text"], str):
            raise TaskDataError(f"{name}:{number}: text is a {type(record['text']).__name__}; expected a string")
        yield number, record, label


def ner_tag(name: str, line: int, tag: str, type_map: Mapping[str, str | None] = MERGED_TYPES) -> str:
    """A CoNLL entity tag mapped by `type_map` (`O` for a type mapped to None)."""
    if tag == "O":
        return tag
    prefix, sep, raw = tag.partition("-")
    if prefix not in ("B", "I") or not sep:
        raise TaskDataError(f"{name}:{line}: entity tag {tag!r} is not O, B-<type> or I-<type>")
    if raw not in type_map:
        raise TaskDataError(
            f"{name}:{line}: unknown entity type {raw!r} in tag {tag!r}; known: {', '.join(sorted(type_map))}"
        )
    merged = type_map[raw]
    return f"{prefix}-{merged}" if merged else "O"


def conll_sentences(
    text: str, name: str, type_map: Mapping[str, str | None] = MERGED_TYPES
) -> Iterator[tuple[int, list[str], list[str]]]:
    """(first line, tokens, mapped tags) of each sentence of a StackOverflowNER CoNLL file: one
    token per line, TAB-separated `token, entity BIO tag, token, markup BIO tag`; a blank line
    ends a sentence."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 1
    for number, raw in enumerate([*physical_lines(text), ""], start=1):
        if raw.strip():
            columns = raw.split("\t")
            if len(columns) != 4:
                raise TaskDataError(
                    f"{name}:{number}: {len(columns)} TAB-separated column(s); expected 4 "
                    "(token, entity tag, token, markup tag)"
                )
            if not tokens:
                start = number
            tokens.append(columns[0])
            tags.append(ner_tag(name, number, columns[1].strip(), type_map))
        elif tokens:
            yield start, tokens, tags
            tokens, tags = [], []


def obsoletion_records(text: str, name: str, *, cut: bool = False) -> Iterator[tuple[int, dict[str, str], str]]:
    """(line, row, label) of a labelled obsoletion CSV `post_id,text,label`: label `current` /
    `obsolete` (any case) or `0` / `1`, normalised to `current` / `obsolete`."""
    allowed = (*OBSOLETION_LABELS, *OBSOLETION_LABEL_ALIASES)
    for line, row in csv_records(text, name, OBSOLETION_COLUMNS, cut=cut):
        label = check_label(name, line, "label", row["label"].strip().lower(), allowed)
        if not row["post_id"].strip():
            raise TaskDataError(f"{name}:{line}: post_id is empty; expected the answer's post id")
        yield line, row, OBSOLETION_LABEL_ALIASES.get(label, label)


# -- the head of a file, as a preflight reads it -------------------------------------------------


def check_head(
    task: TaskName, data: bytes, name: str, *, labels: Sequence[str] | None, encoding: str, cut: bool, rows: int
) -> int:
    """The number of records (sentences for NER) read from the first `rows` of a task file
    through its task's record reader; raises `TaskDataError` at the first bad one.

    `data` is the whole file, or its head when `cut` (the bytes after its last LF are dropped,
    so a line, and a character, is never read in half)."""
    if cut:
        data = data[: data.rfind(b"\n") + 1]
    text = decode(data, name, encoding)
    records: Iterator[Any]
    if task is TaskName.ner:
        records = conll_sentences(text, name)  # each line whole: a cut sentence is checked as far as it goes
    elif task is TaskName.closed:
        records = closed_records(text, name, labels or CLOSED_LABELS, cut=cut)
    elif task is TaskName.quality and quality_is_json_lines(name, text):
        records = quality_json_records(text, name, labels or QUALITY_LABELS)
    elif task is TaskName.quality:
        records = quality_csv_records(text, name, labels or QUALITY_LABELS, cut=cut)
    else:
        records = obsoletion_records(text, name, cut=cut)
    checked = 0
    for _ in records:
        checked += 1
        if checked == rows:
            break
    if checked == 0:
        raise TaskDataError(f"{name}: no {task.value} records in the file")
    return checked
