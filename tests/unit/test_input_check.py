"""The input preflight on local files: what a submit refuses before anything runs or is created."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sobert_api import build_spec
from sobert_api.spec import TaskName
from sobert_operator.input_check import EXPECTED, check_inputs, run_inputs
from sobertctl.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
POSTS = FIXTURES / "dump" / "example.stackexchange.com-Posts.xml"
NER = FIXTURES / "finetune" / "ner.txt"


def spec_of(tmp_path: Path, posts: list[str], tasks: dict | None = None, comments: list[str] | None = None):
    doc = {
        "preset": "tiny",
        "name": "inputs",
        "data": {"posts": posts, "comments": comments or []},
        "storage": {"uri": str(tmp_path / "store")},
        "finetune": {"tasks": tasks or {}},
    }
    return build_spec(doc)


def test_every_input_is_listed_with_the_field_that_names_it(tmp_path):
    spec = spec_of(tmp_path, ["a.xml", "b.xml"], {"ner": {"train": "t.txt", "validation": "v.txt"}}, ["c.xml"])
    assert [(i.field, i.uri) for i in run_inputs(spec)] == [
        ("data.posts[0]", "a.xml"),
        ("data.posts[1]", "b.xml"),
        ("data.comments[0]", "c.xml"),
        ("finetune.tasks.ner.train", "t.txt"),
        ("finetune.tasks.ner.validation", "v.txt"),
    ]


def test_good_inputs_pass(tmp_path):
    spec = spec_of(tmp_path, [str(POSTS)], {"ner": {"train": str(NER), "validation": str(NER)}})
    assert check_inputs(spec) == []


def test_each_bad_input_is_named_with_its_field_file_and_what_was_expected(tmp_path):
    empty = tmp_path / "empty.xml"
    empty.touch()
    quality = tmp_path / "quality.csv"
    shutil.copy(FIXTURES / "finetune" / "quality-bad-label.csv", quality)
    tasks = {"ner": {"train": str(tmp_path / "missing.txt")}, "quality": {"train": str(quality)}}
    spec = spec_of(tmp_path, [str(POSTS), str(empty), str(tmp_path)], tasks)
    problems = check_inputs(spec)
    assert problems == [
        f"data.posts[1]: {empty}: empty file",
        f"data.posts[2]: {tmp_path}: cannot be read (Is a directory)",
        f"finetune.tasks.ner.train: {tmp_path / 'missing.txt'}: not found",
        f"finetune.tasks.quality.train: {quality}:7: Y 'MEDIUM' is not one of HQ, LQ_EDIT, LQ_CLOSE "
        f"(expected {EXPECTED[TaskName.quality]})",
    ]


def test_a_local_submit_with_a_missing_task_file_stops_before_anything_runs(tmp_path, capsys):
    """The user's report: `--finetune ner=missing.txt` ran prepare, pretraining and conversion
    before failing. Now it is refused at submit, and nothing is written."""
    store, work = tmp_path / "store", tmp_path / "work"
    argv = ["submit", "tiny", "--posts", str(POSTS), "--finetune", "ner=missing.txt"]
    assert main([*argv, "--storage", str(store), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert "finetune.tasks.ner.train: missing.txt: not found" in err and "Traceback" not in err
    assert not store.exists() and not work.exists()


@pytest.mark.parametrize("spec_field", ["train", "validation"])
def test_a_task_file_that_does_not_parse_is_refused_at_submit(tmp_path, capsys, spec_field):
    bad = FIXTURES / "finetune" / "ner-bad-type.txt"
    files = {"train": str(NER), "validation": str(NER), spec_field: str(bad)}
    argv = ["submit", "tiny", "--posts", str(POSTS), "--storage", str(tmp_path / "store")]
    argv += ["--set", f"finetune.tasks.ner.train={files['train']}"]
    argv += ["--set", f"finetune.tasks.ner.validation={files['validation']}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"finetune.tasks.ner.{spec_field}: {bad}:" in err and "unknown entity type" in err
    assert EXPECTED[TaskName.ner] in err
    assert not (tmp_path / "store").exists()
