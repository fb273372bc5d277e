from sobert_api import build_spec
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


def test_decide_waits_on_running_and_stops_on_failed():
    from sobert_operator.pipeline import Decision, StageState, decide

    s = StageState
    assert decide({}) == Decision("start", Stage.prepare)
    assert decide({Stage.prepare: s.running}) == Decision("wait", Stage.prepare)
    assert decide({Stage.prepare: s.succeeded, Stage.pretrain: s.failed}) == Decision("fail", Stage.pretrain)
    assert decide({Stage.prepare: s.succeeded, Stage.pretrain: s.succeeded}) == Decision("start", Stage.convert)
    assert decide({stage: s.succeeded for stage in Stage}) == Decision("done")
    # Some finetune tasks failed, the others succeeded: a partial success of the last stage.
    partly = {**{stage: s.succeeded for stage in Stage}, Stage.finetune: s.partial}
    assert decide(partly) == Decision("partial", Stage.finetune)


def test_a_stage_of_several_jobs_ends_when_every_job_has():
    from sobert_operator.pipeline import StageState, combine

    s = StageState
    assert combine([s.failed, s.running]) is s.running  # a failed task does not stop the others
    assert combine([s.failed, s.succeeded]) is s.partial
    assert combine([s.failed, s.failed]) is s.failed
    assert combine([s.succeeded, s.succeeded]) is s.succeeded
    assert combine([s.succeeded, s.missing]) is s.missing
