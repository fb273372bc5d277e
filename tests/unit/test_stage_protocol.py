"""The stage process protocol (`sobert_api.stages`) against what the trainer's entry points parse:
every command an executor builds is one its entry point accepts, with the values it was given."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from sobert_api import stages
from sobert_api.stages import EntryPoint


def entry_module(name: str):
    """What `python -m name` runs: the module, or a package's __main__."""
    found = importlib.util.find_spec(name)
    assert found is not None, name
    return importlib.import_module(f"{name}.__main__" if found.submodule_search_locations else name)


def parse(args: list[str]):
    """The entry point named by `-m MODULE` in `args`, and what its parser makes of the rest."""
    assert args[0] == "-m"
    module = entry_module(args[1])
    return module, module.build_parser().parse_args(args[2:])


def test_every_entry_point_is_a_module_with_main():
    for entry in EntryPoint:
        assert callable(entry_module(entry.value).main), entry


def test_prepare_args_parse_as_given():
    module, args = parse(stages.prepare_args("/etc/sobert/spec.json", "so-0123", force=True))
    assert module.__name__ == f"{EntryPoint.prepare}.__main__"
    assert (args.spec, args.dataset_id, args.force) == (Path("/etc/sobert/spec.json"), "so-0123", True)
    assert parse(stages.prepare_args("s.json", "so-1"))[1].force is False


def test_pretrain_args_parse_as_given():
    _, args = parse(stages.pretrain_args("s.json", "so-1", "/scratch", peak_tflops=989.5))
    assert (args.spec, args.dataset_id, args.workdir, args.peak_tflops) == (
        Path("s.json"),
        "so-1",
        Path("/scratch"),
        989.5,
    )
    assert parse(stages.pretrain_args("s.json", "so-1", "/scratch"))[1].peak_tflops is None


def test_convert_finetune_and_evaluate_args_parse_as_given():
    _, convert = parse(stages.convert_args("s.json", "so-1", step=40))
    assert (convert.dataset_id, convert.step) == ("so-1", 40)
    assert parse(stages.convert_args("s.json", "so-1"))[1].step is None
    _, finetune = parse(stages.finetune_args("s.json", "ner"))
    assert finetune.task == "ner"
    _, evaluate = parse(stages.evaluate_args("s.json", "closed", "heldout", "s3://b/closed.csv"))
    assert (evaluate.task, evaluate.split, evaluate.uri) == ("closed", "heldout", "s3://b/closed.csv")


def test_torchrun_launcher_takes_the_grace_period_the_protocol_gives():
    from sobert_trainer.torchrun import split_grace

    launcher = stages.torchrun_launcher_args(120)
    assert launcher[:2] == ["-m", EntryPoint.torchrun]
    assert split_grace([*launcher[2:], "--nnodes=1", "-m", EntryPoint.pretrain]) == (
        120,
        ["--nnodes=1", "-m", EntryPoint.pretrain],
    )


def test_exit_codes_are_what_the_training_operator_retries_or_not():
    # restartPolicy ExitCode: 1-127 permanent, 128+ retried (IsRetryableExitCode, v1.9.3).
    assert 1 <= stages.EXIT_FAILED < 128 and 1 <= stages.EXIT_BAD_INPUT < 128
    assert stages.EXIT_PREEMPTED == 143


@pytest.mark.parametrize("line", ["2026-12-04 10:00:00,123 INFO sobert_trainer.pretrain.train: pretrain: resumed"])
def test_trainer_log_lines_are_recognised_in_the_format_the_trainer_logs(line):
    assert stages.TRAINER_INFO_LINE.sub("", line) == "pretrain: resumed"
