from sobert_api import build_spec
from sobert_operator.launch import pretrain_command, torchrun_args
from sobert_operator.pipeline import Observed, Stage, next_stage

SPEC = build_spec(
    {
        "preset": "tiny",
        "name": "t",
        "data": {"posts": ["p"]},
        "storage": {"uri": "/s"},
        "parallel": {"procs_per_node": 2},
    }
)


def test_stages_follow_published_outputs():
    iters = SPEC.train_iters
    assert next_stage(SPEC, Observed()) is Stage.prepare
    assert next_stage(SPEC, Observed(dataset_published=True)) is Stage.pretrain
    assert next_stage(SPEC, Observed(dataset_published=True, checkpoint_step=iters - 1)) is Stage.pretrain
    assert next_stage(SPEC, Observed(dataset_published=True, checkpoint_step=iters)) is Stage.convert
    # a conversion of an older checkpoint is stale
    assert next_stage(SPEC, Observed(dataset_published=True, checkpoint_step=iters, hf_step=20)) is Stage.convert
    assert next_stage(SPEC, Observed(dataset_published=True, checkpoint_step=iters, hf_step=iters)) is None


def test_torchrun_command_is_rendered_from_the_spec():
    command = pretrain_command(SPEC, "spec.json", "so-1", "/scratch")
    assert command[:3] == ["python", "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and "--standalone" in command
    assert command[command.index("-m", 3) + 1] == "sobert_trainer.pretrain"
    multi = build_spec(
        {
            "preset": "base",
            "name": "b",
            "data": {"posts": ["p"]},
            "storage": {"uri": "/s"},
            "parallel": {"nodes": 4, "procs_per_node": 8},
        }
    )
    args = torchrun_args(multi, rdzv_endpoint="b-master-0:29400")
    assert "--nnodes=4" in args and "--rdzv_backend=c10d" in args and "--standalone" not in args


def test_decide_waits_on_running_and_stops_on_failed():
    from sobert_operator.pipeline import Decision, StageState, decide

    s = StageState
    assert decide({}) == Decision("start", Stage.prepare)
    assert decide({Stage.prepare: s.running}) == Decision("wait", Stage.prepare)
    assert decide({Stage.prepare: s.succeeded, Stage.pretrain: s.failed}) == Decision("fail", Stage.pretrain)
    assert decide({Stage.prepare: s.succeeded, Stage.pretrain: s.succeeded}) == Decision("start", Stage.convert)
    assert decide({stage: s.succeeded for stage in Stage}) == Decision("done")
