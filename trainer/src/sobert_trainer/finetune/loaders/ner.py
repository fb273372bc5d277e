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

Label set (the tables `MERGED_TYPES`, `NER_TYPES` and `RAW_TYPES` are in `sobert_api.task_files`,
with the file format's reader, `conll_sentences`). The paper evaluates 20 entity types, listed on
the authors' project page: code
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

from sobert_api.task_files import MERGED_TYPES, conll_sentences, read_text
from sobert_trainer.finetune.examples import LoadResult, TokenExample

METADATA = ("Question_ID", "Question_URL", "Answer_to_Question_ID")
PLACEHOLDERS = ("CODE_BLOCK", "OP_BLOCK")


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
    for start, tokens, tags in conll_sentences(read_text(path, encoding), str(path), type_map):
        reason = _dropped(tokens)
        if reason:
            result.skip(reason)
        else:
            result.examples.append(TokenExample(f"{Path(path).name}:{start}", tuple(tokens), tuple(tags)))
    return result
