"""The upstream components the testbed runs, pinned, and their published manifests.

The versions are those testbed/scripts/build-operators.sh builds (tests/unit/test_testbed_pins.py
checks the two agree). Each operator's CRDs and webhook configurations are read from its Go module
at that version (`go mod download`), never from a copy, so the schemas the API server enforces are
exactly those of the operators that run.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GoModule:
    path: str
    version: str

    def source(self) -> Path:
        """The module's source at its version, from the module cache or through the proxy."""
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{self.path}@{self.version}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return Path(json.loads(result.stdout)["Dir"])


TRAINING_OPERATOR = GoModule("github.com/kubeflow/training-operator", "v1.9.3")
KUBERAY = GoModule("github.com/ray-project/kuberay/ray-operator", "v1.5.1")
TRAINER = GoModule("github.com/kubeflow/trainer/v2", "v2.2.1")
JOBSET = GoModule("sigs.k8s.io/jobset", "v0.11.1")


def workload_crds() -> list[Path]:
    """The CRDs of the kinds sobert creates: PyTorchJob (Training Operator), RayJob (KubeRay),
    TrainJob and ClusterTrainingRuntime (Trainer v2), each from its operator's module."""
    training_operator = TRAINING_OPERATOR.source() / "manifests" / "base" / "crds"
    kuberay = KUBERAY.source() / "config" / "crd" / "bases"
    trainer = TRAINER.source() / "manifests" / "base" / "crds"
    return [
        training_operator / "kubeflow.org_pytorchjobs.yaml",
        kuberay / "ray.io_rayjobs.yaml",
        trainer / "trainer.kubeflow.org_trainjobs.yaml",
        trainer / "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    ]
