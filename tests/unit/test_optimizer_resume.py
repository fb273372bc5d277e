"""The optimizer a checkpoint restores steps as the one that was saved.

Two training setups of the same model, in this process: one takes two steps, is saved with the
sharded state dict a checkpoint holds, and takes a third; the other is built fresh (as a restarted
pod builds it), loads that checkpoint and takes the same third step. Their weights and Adam state
must then be identical, with the distributed optimizer (the default) and without it.
"""

from __future__ import annotations

import pytest
import torch

from pretrain_runs import numerics_spec

SPEC = numerics_spec("t", "/s", {"posts": ["p"], "comments": []})  # tiny, dropout off


def _setup(distributed_optimizer: bool):
    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.distributed import set_random_seed
    from sobert_trainer.pretrain.setup import setup_model_and_optimizer

    cpu_compat.install()
    set_random_seed(SPEC.train.seed)
    spec = SPEC.model_copy(
        update={"parallel": SPEC.parallel.model_copy(update={"distributed_optimizer": distributed_optimizer})}
    )
    return setup_model_and_optimizer(spec, bf16=False, device=torch.device("cpu"))


def _step(setup, seed: int) -> None:
    from megatron.core.distributed import finalize_model_grads

    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, SPEC.model.vocab_size, (4, 64), generator=generator)
    labels = torch.randint(5, SPEC.model.vocab_size, (4, 64), generator=generator)
    setup.model.zero_grad_buffer()
    setup.optimizer.zero_grad()
    lm_loss, _ = setup.model(tokens, torch.ones_like(tokens), tokentype_ids=torch.zeros_like(tokens), lm_labels=labels)
    lm_loss.float().mean().backward()
    finalize_model_grads([setup.model])
    updated, _, _ = setup.optimizer.step()
    assert updated
    setup.scheduler.step(increment=1)
    setup.after_step(updated)


def _adam_state(setup) -> list[dict[str, torch.Tensor]]:
    return [dict(state) for optimizer in setup.megatron_optimizers() for state in optimizer.optimizer.state.values()]


@pytest.mark.parametrize("distributed_optimizer", [True, False])
def test_a_resumed_optimizer_steps_as_the_uninterrupted_one(one_rank, tmp_path, distributed_optimizer):
    from megatron.core import dist_checkpointing

    uninterrupted = _setup(distributed_optimizer)
    uninterrupted.before_first_step()
    _step(uninterrupted, 1)
    _step(uninterrupted, 2)
    uninterrupted.gather_params()
    dist_checkpointing.save(uninterrupted.sharded_state(is_loading=False), str(tmp_path))
    schedule = uninterrupted.scheduler.state_dict()
    _step(uninterrupted, 3)

    resumed = _setup(distributed_optimizer)
    resumed.load(dist_checkpointing.load(resumed.sharded_state(is_loading=True), str(tmp_path)))
    resumed.scheduler.load_state_dict(schedule)
    resumed.before_first_step()
    _step(resumed, 3)

    expected = dict(uninterrupted.bert.named_parameters())
    weights = dict(resumed.bert.named_parameters())
    assert weights.keys() == expected.keys()
    differing = [name for name, p in expected.items() if not torch.equal(weights[name], p)]
    assert not differing, f"weights differ after the resumed step: {differing[:5]}"
    expected_state, state = _adam_state(uninterrupted), _adam_state(resumed)
    assert len(state) == len(expected_state) > 10
    for got, want in zip(state, expected_state, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), f"Adam state '{key}': {got[key]} vs {want[key]}"
