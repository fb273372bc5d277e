import json

import pytest

from sobertctl.main import main


def test_dry_run_prints_validated_spec_and_commands(capsys, tmp_path):
    code = main(
        [
            "submit",
            "tiny",
            "--posts",
            "P.xml",
            "--storage",
            str(tmp_path),
            "--procs-per-node",
            "2",
            "--set",
            "train.lr=3e-4",
            "--dry-run",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    spec = json.loads(out[: out.index("# pretrain")])
    assert spec["train"]["lr"] == 3e-4 and spec["parallel"]["procs_per_node"] == 2
    launch = "sobert_trainer.torchrun --grace-seconds=300 --nproc-per-node=2 --nnodes=1 --standalone"
    assert f"{launch} -m sobert_trainer.pretrain" in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["submit", "tiny", "--posts", "P.xml", "--tp", "3"], 2, "parallel.tensor_parallel (3) must divide"),
        (["submit", "--posts", "P.xml"], 2, "give a preset"),
        (["submit", "tiny", "--posts", "P.xml", "--set", "train.lr"], 2, "expected PATH=VALUE"),
        (
            ["submit", "tiny", "--posts", "missing-Posts.xml", "--storage", "{tmp}"],
            2,
            "data.posts[0]: missing-Posts.xml: not found",
        ),
        (["pretrain", "nope", "--storage", "{tmp}"], 1, "no such run"),
    ],
)
def test_bad_input_exits_nonzero_with_a_clear_error(argv, code, message, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == code
    assert message in capsys.readouterr().err


def test_te_layers_on_a_machine_without_a_gpu_are_refused_before_anything_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    argv = ["submit", "tiny", "--posts", "P.xml", "--storage", str(tmp_path / "store"), "--set"]
    assert main([*argv, "model.transformer_impl=te"]) == 2
    err = capsys.readouterr().err
    assert "model.transformer_impl: te needs a GPU (nvidia-smi lists none)" in err and "Traceback" not in err
    assert not (tmp_path / "store").exists()
    # local layers pass this check and go on to the next (the missing posts file)
    assert main([*argv, "model.transformer_impl=local"]) == 2
    assert "data.posts[0]: P.xml: not found" in capsys.readouterr().err


def test_resubmitting_a_name_with_another_spec_is_refused(tmp_path):
    from sobert_api import build_spec
    from sobert_api.storage import Storage
    from sobert_operator.run_record import RunConflictError, record_spec

    doc = {"preset": "tiny", "name": "r", "data": {"posts": ["p"]}, "storage": {"uri": str(tmp_path)}}
    storage = Storage.open(str(tmp_path))
    record_spec(build_spec(doc), storage)
    record_spec(build_spec(doc), storage)  # same spec: fine (resume)
    with pytest.raises(RunConflictError, match="differs in: train"):
        record_spec(build_spec({**doc, "train": {"lr": 1e-3}}), storage)


def test_submit_without_a_dump_says_what_to_pass(capsys):
    """A preset names no corpus: the error says which flag, what it takes and why (not `data: Field required`)."""
    assert main(["submit", "large", "--backend", "kubernetes", "--storage", "s3://bucket/sobert", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--posts" in err and "s3://" in err and "Field required" not in err


def test_kubernetes_dry_run_is_plain_yaml(capsys):
    """Every manifest printed in full: no YAML anchors or aliases for parts the objects share."""
    import yaml

    argv = ["submit", "base", "--backend", "kubernetes", "--storage", "s3://bucket/sobert", "--dry-run"]
    argv += ["--posts", "s3://dumps/Posts.xml", "--nodes", "2", "--gpus-per-node", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "&id" not in out and "*id" not in out
    job = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "PyTorchJob")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
