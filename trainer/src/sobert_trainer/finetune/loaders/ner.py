"""StackOverflowNER (Tabassum, Maddela, Xu, Ritter, ACL 2020) CoNLL files.

Format: one token per line, TAB-separated `token, entity BIO tag, token, markup BIO tag`; a blank
line ends a sentence. Two kinds of sentence are dropped (and counted in `skipped`), as the
authors' own reader (`code/DataReader/loader_so.py`) drops them:
- thread metadata, `Question_ID : <id>`, `Question_URL : <url>`, `Answer_to_Question_ID : <id>`:
  not post text (3 in train.txt + dev.txt carry a stray entity tag on `Question_ID`: noise);
- placeholders for omitted blocks, `CODE_BLOCK : Q_12 ( code omitted for annotation )` and
  `OP_BLOCK : ( output omitted for annotation )`: their tags are fixed by the template, so
  keeping them would add ~2,000 trivially right entities to every score. (The authors' reader
  also drops the 2 sentences in train.txt where a placeholder follows other words; we keep them.)
Tags are kept as given after mapping (an `I-` after `O` or after another type stays; the metric
decides how to count it).

Label set. The paper evaluates 20 entity types, listed on the authors' project page: code
entities Class, Variable, In-Line Code (`Code_Block` in the files), Function, Library, Value,
Data Type, HTML/XML Tag; natural-language entities Application, UI Element, Language, Data
Structure, Algorithm, File Type, File Name, Version, Device, Operating System, Website, User Name.
The files carry 28 raw types (29 with the GitHub-only `Data_Set_Name`). `MERGED_TYPES` maps them
as the authors' loader does (`Merge_Label` in `code/DataReader/loader_so.py`, README of `code/`,
and visible in their `train_merged_labels.txt`): Library_Class + Class_Name -> Class,
Library_Function + Function_Name -> Function, Library_Variable + Variable_Name -> Variable, and
Organization -> Website (e.g. "Microsoft B-Website" in that file). The four remaining types
outside the 20 (Output_Block, Error_Name, Keyboard_IP, Licence) and Data_Set_Name become O.
Caveat: the authors' loader picks its kept types from a hard-coded frequency list that lacks
Value and keeps Output_Block; we follow the 20 types the paper names instead (Value kept,
Output_Block -> O). Which of the two the published scores used cannot be told from the release.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sobert_trainer.finetune.examples import LoadResult, TaskDataError, TokenExample
from sobert_trainer.finetune.loaders.common import physical_lines, read_text

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

METADATA = ("Question_ID", "Question_URL", "Answer_to_Question_ID")
PLACEHOLDERS = ("CODE_BLOCK", "OP_BLOCK")


def _map_tag(path: str | Path, line: int, tag: str, type_map: Mapping[str, str | None]) -> str:
    if tag == "O":
        return tag
    prefix, sep, raw = tag.partition("-")
    if prefix not in ("B", "I") or not sep:
        raise TaskDataError(f"{path}:{line}: entity tag {tag!r} is not O, B-<type> or I-<type>")
    if raw not in type_map:
        raise TaskDataError(
            f"{path}:{line}: unknown entity type {raw!r} in tag {tag!r}; known: {', '.join(sorted(type_map))}"
        )
    merged = type_map[raw]
    return f"{prefix}-{merged}" if merged else "O"


def _dropped(tokens: list[str]) -> str | None:
    """Why a whole sentence is not an example, or None."""
    if len(tokens) > 1 and tokens[1] == ":":
        if tokens[0] in METADATA:
            return "metadata sentence"
        if tokens[0] in PLACEHOLDERS and tokens[-1] == ")" and "omitted" in tokens:
            return "placeholder sentence"
    return None


def load_conll(
    path: str | Path, type_map: Mapping[str, str | None] = MERGED_TYPES, encoding: str = "utf-8"
) -> LoadResult[TokenExample]:
    """Sentences as examples (id `<file name>:<first line>`), tags mapped by `type_map`."""
    result: LoadResult[TokenExample] = LoadResult()
    tokens: list[str] = []
    tags: list[str] = []
    start = 1
    for number, raw in enumerate([*physical_lines(read_text(path, encoding)), ""], start=1):
        if raw.strip():
            columns = raw.split("\t")
            if len(columns) != 4:
                raise TaskDataError(
                    f"{path}:{number}: {len(columns)} TAB-separated column(s); expected 4 "
                    "(token, entity tag, token, markup tag)"
                )
            if not tokens:
                start = number
            tokens.append(columns[0])
            tags.append(_map_tag(path, number, columns[1].strip(), type_map))
            continue
        if tokens:
            reason = _dropped(tokens)
            if reason:
                result.skip(reason)
            else:
                result.examples.append(TokenExample(f"{Path(path).name}:{start}", tuple(tokens), tuple(tags)))
            tokens, tags = [], []
    return result
