"""Run in an environment with only the operator and the contract installed (what the controller
image installs): import the controller as `kopf run -m sobert_operator.controller.main` does, then
do what its reconciles do with a run's s3:// storage. Prints a JSON summary for the test.

Argument: the storage prefix (s3://bucket/prefix); AWS_* credentials and AWS_ENDPOINT_URL in the
environment, as the controller gets them from the run's Secret."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import sobert_operator.controller.main  # noqa: F401 - the module kopf runs
from sobert_api import paths
from sobert_api.dataset import dataset_id
from sobert_api.loading import build_spec
from sobert_api.storage import Storage
from sobert_operator.cost.ledger import Allocation
from sobert_operator.cost.records import append_allocation, read_ledger
from sobert_operator.published import observe
from sobert_operator.report import write_report

TRAINING_STACK = ("sobert_trainer", "torch", "megatron", "transformers", "tokenizers", "ray")

uri = sys.argv[1]
spec = build_spec(
    {
        "preset": "tiny",
        "name": "closure",
        "backend": "kubernetes",
        "storage": {"uri": uri, "endpoint_url": os.environ["AWS_ENDPOINT_URL"]},
        "data": {"posts": [f"{uri}/dumps/Posts.xml"]},
    }
)
credentials = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, credentials)
now = time.time()
# What a pretraining pod publishes (a progress record as the trainer writes it), and the
# controller's ledger of two pods.
record = {
    "step": 5, "train_iters": 40, "consumed_tokens": 5 * 16 * 128, "loss": 8.1, "lr": 2.5e-4, "grad_norm": 1.2,
    "skipped": False, "step_time_s": 0.1, "tokens_per_s": 20480.0, "real_tokens_per_s": 20000.0,
    "real_token_fraction": 0.97656, "model_tflops_per_s_per_device": 0.0001, "mfu": None, "wall_time_s": 0.5,
    "world_size": 2, "process_started_at": now - 90, "resumed_from": None, "startup_s": 20.0, "restore_s": 0.0,
    "data_wait_s": 0.1, "checkpoint_save_s": 0.0, "train_step_s": 0.5, "time": now - 30,
}  # fmt: skip
storage.write_bytes(paths.progress_key(spec.name), json.dumps(record).encode() + b"\n")
for index in range(2):
    pod = Allocation(f"closure-pretrain-{index}", "pretrain", "h100", 1, 2.5, now - 60, now, "Completed")
    append_allocation(storage, spec.name, pod)
observed = observe(spec, storage, dataset_id(spec))
report, _ = write_report(spec, storage)
print(
    json.dumps(
        {
            "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(TRAINING_STACK)),
            "installed": [m for m in TRAINING_STACK if importlib.util.find_spec(m) is not None],
            "ledger": len(read_ledger(storage, spec.name)),
            "spent_usd": report["spent"]["usd"],
            "checkpoint_step": observed.checkpoint_step,
            "report_keys": sorted(k.rsplit("/", 1)[-1] for k in storage.list(paths.cost_prefix(spec.name))),
        }
    )
)
