"""Real-token accounting: the host-side tally, the record's fields, and where they are shown."""

from __future__ import annotations

import pytest
import torch

from sobert_operator.kube.progress import status_from_record
from sobert_trainer.pretrain.throughput import TokenTally, throughput_fields
from sobertctl.kube import run_row


def test_tally_counts_slots_and_real_tokens_of_the_batches_it_passes_on():
    masks = [torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]), torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])]
    tally = TokenTally()
    passed = list(tally.counted(iter({"padding_mask": m, "text": m} for m in masks)))
    assert [b["padding_mask"] for b in passed] == masks
    assert tally.take() == (16, 10)
    assert tally.take() == (0, 0)  # each record counts the tokens since the previous one


def test_fields_follow_from_throughput_fraction_flops_and_peak():
    fields = throughput_fields(2_000_000.0, 0.98, 1e9, devices=8, peak_tflops=989.0)
    assert fields["real_tokens_per_s"] == 1_960_000.0
    assert fields["model_tflops_per_s_per_device"] == pytest.approx(1_960_000 * 1e9 / 8 / 1e12, rel=1e-6)
    assert fields["mfu"] == pytest.approx(fields["model_tflops_per_s_per_device"] / 989.0, rel=1e-4)
    assert throughput_fields(1000.0, 1.0, 1e9, devices=2, peak_tflops=None)["mfu"] is None


def test_status_and_sobertctl_show_real_tokens_and_mfu():
    record = {"step": 10, "train_iters": 40, "tokens_per_s": 1000.0, "real_tokens_per_s": 990.0,
              "real_token_fraction": 0.99, "model_tflops_per_s_per_device": 0.5, "mfu": 0.456}  # fmt: skip
    status = status_from_record(record)
    assert (status["realTokensPerSecond"], status["realTokenFraction"], status["mfu"]) == (990.0, 0.99, 0.456)
    run = {"metadata": {"name": "r"}, "spec": {}, "status": {"pretrain": status}}
    row = run_row(run)
    assert (row["REAL"], row["MFU"]) == ("99%", "45.6%")
    assert run_row({"metadata": {"name": "r"}, "status": {"pretrain": {**status, "mfu": None}}})["MFU"] == "-"


def test_status_and_sobertctl_show_the_last_validation_loss(tmp_path):
    """The newest record rarely evaluated: status carries the newest validation loss and its step."""
    import json

    from sobert_api import build_spec, paths
    from sobert_api.storage import Storage
    from sobert_operator.kube.progress import last_progress

    spec = build_spec({"preset": "tiny", "name": "r", "data": {"posts": ["p.xml"]}, "storage": {"uri": str(tmp_path)}})
    records = [
        {"step": 10, "loss": 8.2, "validation_lm_loss": 8.31},
        {"step": 20, "loss": 8.0, "validation_lm_loss": 8.14},
        {"step": 25, "loss": 7.9},
    ]
    Storage.open(str(tmp_path)).write_bytes(
        paths.progress_key("r"), "".join(json.dumps(r) + "\n" for r in records).encode()
    )
    status = last_progress(spec, None)
    assert (status["step"], status["loss"], status["validationLoss"], status["validationStep"]) == (25, 7.9, 8.14, 20)
    assert run_row({"metadata": {"name": "r"}, "status": {"pretrain": status}})["VAL LOSS"] == "8.140"
    assert run_row({"metadata": {"name": "r"}, "status": {"pretrain": {"step": 1}}})["VAL LOSS"] == "-"
