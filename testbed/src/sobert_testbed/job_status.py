"""Job status as the controllers that own it write it, for tests and benchmarks that play them.

The API server validates a batch Job's status subresource as the v1.35 Job controller writes it
(kubernetes v1.35, pkg/apis/batch/validation/validation.go, ValidateJobUpdateStatus): a finished
Job has a `startTime`, a complete one a `completionTime`, and `Complete` / `Failed` come after
`SuccessCriteriaMet` / `FailureTarget`. A hand-written `{"conditions": [Complete]}` is refused
with 422. Kubeflow's and KubeRay's kinds take conditions with `lastUpdateTime`.
"""

from __future__ import annotations

import time
from typing import Any


def finished_status(conditions: list[tuple[str, str]], batch: bool = True) -> dict[str, Any]:
    """The `status` that sets `conditions` ((type, message) pairs, each True) on a job: a batch
    Job's (`batch`) with the fields and companion conditions the Job controller writes with them,
    else a Kubeflow or KubeRay job's."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    types = list(conditions)
    status: dict[str, Any] = {}
    if batch:
        status["startTime"] = now
        if any(t == "Complete" for t, _ in types):
            types = [("SuccessCriteriaMet", ""), *types]
            status |= {"completionTime": now, "succeeded": 1}
        if any(t == "Failed" for t, _ in types):
            message = next(m for t, m in types if t == "Failed")
            types = [("FailureTarget", message), *types]
            status["failed"] = 1
    status["conditions"] = [
        {"type": t, "status": "True", "reason": t, "lastTransitionTime": now}
        | ({} if batch else {"lastUpdateTime": now})
        | ({"message": m} if m else {})
        for t, m in types
    ]
    return status
