"""Goodput and badput in dollars from recorded histories: a pretraining run resumed after a kill,
a finetune whose Ray cluster outlived its job, and the phases that are their own work."""

from __future__ import annotations

import pytest

from sobert_operator.cost.goodput import CATEGORIES, goodput, pretrain_seconds
from sobert_operator.cost.ledger import Allocation

PRICE = 3.0  # per GPU-hour, 8 GPUs a pod: $24 an hour, $1 every 150 s


def pod(name, phase, start, end, reason="Completed"):
    return Allocation(name, phase, "h100", 8, PRICE, start, end, reason)


def record(started, step, resumed_from, *, startup, restore=0.0, wait, save, steps_s, evaluation=0.0, real=0.9):
    return {"process_started_at": started, "step": step, "resumed_from": resumed_from, "startup_s": startup,
            "restore_s": restore, "data_wait_s": wait, "checkpoint_save_s": save, "train_step_s": steps_s,
            "evaluation_s": evaluation, "real_token_fraction": real}  # fmt: skip


# A process starts at t=0, runs steps 1-100 (200 s of steps, 10 s of them waiting for data, 15 s in
# checkpoint saves, 4 s evaluating the validation loss) after 30 s of start-up, and is killed at step
# 100 with its last checkpoint at 80. Its successor starts at t=300, restores for 5 s (20 s
# start-up), runs steps 81-200 (240 s, 6 s of evaluations beside them) and ends.
FIRST = [
    record(0.0, 50, 0, startup=30, wait=5, save=5, steps_s=100, evaluation=2),
    record(0.0, 100, 0, startup=30, wait=10, save=15, steps_s=200, evaluation=4),
]
SECOND = [record(300.0, 200, 80, startup=20, restore=5, wait=12, save=8, steps_s=240, evaluation=6)]


def test_pretraining_seconds_follow_the_processes_clocks():
    seconds = pretrain_seconds(FIRST + SECOND)
    lost = (100 - 80) * 200 / 100  # the steps the successor redid, at the first process's mean step time
    stepping = (200 - 10) + (240 - 12) - lost
    assert seconds == pytest.approx({
        "productive": stepping * 0.9,
        "padding": stepping * 0.1,
        "startup": 30 + (20 - 5),
        "checkpoint_restore": 5,
        "data_wait": 22,
        "checkpoint_save": 23,
        "evaluation": 10,
        "lost_to_restarts": lost,
    })  # fmt: skip


def test_pretraining_dollars_are_shares_of_the_phase_wall_time():
    ledger = [pod("p0", "pretrain", 0, 290, "Killed"), pod("p1", "pretrain", 300, 600)]
    figures = goodput(ledger, FIRST + SECOND, {}, now=1000)
    phase = figures["by_phase"]["pretrain"]
    spent = 24 * 590 / 3600
    assert sum(phase.values()) == pytest.approx(spent)
    seconds = pretrain_seconds(FIRST + SECOND)
    wall = 590
    for category, value in seconds.items():
        assert phase[category] == pytest.approx(spent * value / wall), category
    assert phase["other"] == pytest.approx(spent * (wall - sum(seconds.values())) / wall)
    assert phase["idle_cluster"] == 0


def test_an_idle_ray_cluster_after_its_job_is_badput():
    # Head and worker pods up at t=0; the job trains from 60 to 660 and the cluster lives to 3600 (TTL).
    ledger = [pod("head", "finetune/quality", 0, 3600), pod("worker", "finetune/quality", 10, 3600)]
    history = [{"real_token_fraction": 0.7}, {"real_token_fraction": 0.9}]  # batches padded to their longest
    metrics = {"quality": {"started_at": 60.0, "finished_at": 660.0, "history": history}}
    figures = goodput(ledger, [], metrics, now=4000)
    phase = figures["by_phase"]["finetune/quality"]
    rate = 24 / 3600
    assert phase["startup"] == pytest.approx(rate * (60 + 50))
    assert phase["productive"] == pytest.approx(rate * 600 * 2 * 0.8)
    assert phase["padding"] == pytest.approx(rate * 600 * 2 * 0.2)
    assert phase["idle_cluster"] == pytest.approx(rate * (3600 - 660) * 2)
    assert sum(phase.values()) == pytest.approx(rate * (3600 + 3590))


def test_run_totals_and_fraction_add_up_over_phases():
    ledger = [pod("prep", "prepare", 0, 100), pod("p0", "pretrain", 100, 700), pod("conv", "convert", 700, 760),
              pod("ft", "finetune/ner", 800, 1000)]  # fmt: skip
    progress = [record(100.0, 10, 0, startup=50, wait=0, save=10, steps_s=500, real=1.0)]
    figures = goodput(ledger, progress, {}, now=2000)  # the finetune never finished: all "other"
    assert list(figures["run"]) == list(CATEGORIES)
    total = sum(a.usd(2000) for a in ledger)
    assert sum(figures["run"].values()) == pytest.approx(total)
    assert figures["by_phase"]["prepare"]["productive"] == pytest.approx(24 * 100 / 3600)
    assert figures["by_phase"]["finetune/ner"]["other"] == pytest.approx(24 * 200 / 3600)
    assert figures["goodput_fraction"] == pytest.approx(figures["run"]["productive"] / total)
    assert figures["badput_usd"] == pytest.approx(total - figures["run"]["productive"])


def test_the_training_clock_counts_data_waits_restores_and_saves_where_they_happen():
    """The clock against sleeps of known length: a loader that takes 30 ms a batch, a 50 ms
    restore and a 20 ms save; the consumer's own 100 ms between batches is not data wait."""
    import time

    from sobert_trainer.pretrain.goodput_clock import GoodputClock

    def slow_loader():
        for batch in range(3):
            time.sleep(0.03)
            yield batch

    clock = GoodputClock(started_at=time.time() - 2.0)
    with clock.restoring():
        time.sleep(0.05)
    assert list(_consume(clock.waited(slow_loader()), pause=0.1)) == [0, 1, 2]
    with clock.saving():
        time.sleep(0.02)
    clock.step_began()
    fields = clock.fields()
    assert 0.09 <= fields["data_wait_s"] < 0.35  # three 30 ms waits; with the pauses it would be >= 0.39
    assert 0.05 <= fields["restore_s"] < 0.3 and 0.02 <= fields["checkpoint_save_s"] < 0.3
    assert fields["startup_s"] >= 2.0


def _consume(batches, pause: float):
    import time

    for batch in batches:
        time.sleep(pause)
        yield batch
