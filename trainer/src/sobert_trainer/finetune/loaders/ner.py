"""StackOverflowNER (Tabassum, Maddela, Xu, Ritter — ACL 2020) CoNLL files.

Format: one token per line, TAB-separated `token, entity BIO tag, token, markup BIO tag`; a blank
line ends a sentence. The `Question_ID : …`, `Question_URL : …` and `Answer_to_Question_ID : …`
sentences are thread metadata with no entities and are dropped.

Label set: the paper evaluates on 20 entity types — code entities Class, Variable, In-Line Code
(`Code_Block` in the files), Function, Library, Value, Data Type, HTML/XML Tag; natural-language
entities Application, UI Element, Language, Data Structure, Algorithm, File Type, File Name,
Version, Device, Operating System, Website, User Name. The annotation has finer raw types;
`MERGED_TYPES` maps them: Library_Class + Class_Name -> Class, Library_Variable + Variable_Name ->
Variable, Library_Function + Function_Name -> Function (the merges of the authors'
`train_merged_labels.txt`), and the types outside the 20 (Output_Block, Error_Name, Keyboard_IP,
Licence, Organization, and the GitHub-only Data_Set_Name) become O.
"""

from __future__ import annotations

from pathlib import Path

from sobert_trainer.finetune.examples import LoadResult, TaskDataError, TokenExample
from sobert_trainer.finetune.loaders.common import physical_lines, read_text

MERGED_TYPES: dict[str, str | None] = {
    "Application": "Application",
    "Algorithm": "Algorithm",
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
    # Annotated, but not among the 20 evaluated types:
    "Output_Block": None,
    "Error_Name": None,
    "Keyboard_IP": None,
    "Licence": None,
    "Organization": None,
    "Data_Set_Name": None,
}
NER_TYPES: tuple[str, ...] = tuple(sorted({t for t in MERGED_TYPES.values() if t}))
RAW_TYPES: dict[str, str | None] = {t: t for t in MERGED_TYPES}
METADATA_PREFIXES = ("Question_ID", "Question_URL", "Answer_to_Question_ID")


def _map_tag(path, line: int, tag: str, type_map: dict[str, str | None]) -> str:
    if tag == "O":
        return tag
    prefix, sep, raw = tag.partition("-")
    if prefix not in ("B", "I") or not sep:
        raise TaskDataError(f"{path}:{line}: tag {tag!r} is not O, B-<type> or I-<type>")
    if raw not in type_map:
        raise TaskDataError(f"{path}:{line}: unknown entity type {raw!r}; known: {', '.join(sorted(type_map))}")
    merged = type_map[raw]
    return f"{prefix}-{merged}" if merged else "O"


def load_conll(path: str | Path, type_map: dict[str, str | None] = MERGED_TYPES, encoding: str = "utf-8") -> LoadResult:
    result = LoadResult()
    tokens: list[str] = []
    tags: list[str] = []
    start = 1

    def finish() -> None:
        if not tokens:
            return
        if tokens[0] in METADATA_PREFIXES and len(tokens) > 1 and tokens[1] == ":":
            result.skipped["metadata sentence"] = result.skipped.get("metadata sentence", 0) + 1
        else:
            result.examples.append(TokenExample(f"{Path(path).name}:{start}", tuple(tokens), tuple(tags)))
        tokens.clear()
        tags.clear()

    for number, raw in enumerate(physical_lines(read_text(path, encoding)), start=1):
        if not raw.strip():
            finish()
            start = number + 1
            continue
        columns = raw.split("\t")
        if len(columns) != 4:
            raise TaskDataError(
                f"{path}:{number}: expected 4 TAB-separated columns (token, entity tag, token, markup tag), "
                f"got {len(columns)}"
            )
        tokens.append(columns[0])
        tags.append(_map_tag(path, number, columns[1].strip(), type_map))
    finish()
    return result
