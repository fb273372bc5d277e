"""`sobertctl data prepare` as a user runs it: the trainer's prepare stage as a process, given a
spec built from the flags. It publishes, byte for byte and under the same id, the dataset that
`prepare_dataset` publishes in process with the same inputs and settings (what the command did
before it ran the stage as a process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES
from sobert_api import paths
from sobert_api.storage import Storage
from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset

pytestmark = pytest.mark.integration
POSTS = str(FIXTURES / "dump" / "example.stackexchange.com-Posts.xml")
COMMENTS = str(FIXTURES / "dump" / "example.stackexchange.com-Comments.xml")


def sobertctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sobertctl.main", *args], capture_output=True, text=True, timeout=600)


def test_data_prepare_publishes_what_prepare_dataset_publishes(tmp_path):
    result = sobertctl(
        "data", "prepare", "--posts", POSTS, "--comments", COMMENTS, "--out", str(tmp_path / "cli"),
        "--vocab-size", "600", "--workers", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    config = PrepareConfig(posts=[POSTS], comments=[COMMENTS], vocab_size=600, workers=1)
    reference = prepare_dataset(config, Storage.open(str(tmp_path / "ref")))
    assert summary["dataset_id"] == reference["dataset_id"]
    assert summary["counts"] == reference["counts"] and summary["tokenizer"] == reference["tokenizer"]
    published = Storage.open(str(tmp_path / "cli")).read_manifest(paths.dataset_prefix(summary["dataset_id"]))
    assert published is not None and published["files"] == reference["files"]  # every file's sha256
    assert summary["uri"] == str(tmp_path / "cli" / "data" / summary["dataset_id"])


def test_data_prepare_refuses_a_bad_flag_by_its_field_and_writes_nothing(tmp_path):
    result = sobertctl("data", "prepare", "--posts", POSTS, "--out", str(tmp_path / "out"), "--vocab-size", "3")
    assert result.returncode == 2, result.stderr
    assert "model.vocab_size" in result.stderr
    assert not (tmp_path / "out").exists()
