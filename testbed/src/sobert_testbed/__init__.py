"""sobert's testbed: real infrastructure for tests and for a developer to try things on.

A real S3 server (`s3`), a real Kubernetes v1.35 control plane (`apiserver`: kube-apiserver and
etcd; `cluster`: plus the scheduler, the controller-manager, the upstream operators and one
process kubelet per node, `kubelet`), all started from binaries built or fetched by the scripts in
testbed/scripts and cached. Importable without pytest: a missing prerequisite raises
`MissingPrerequisiteError`, which the tests' plugin (tests/testbed_plugin.py) turns into a skip,
or a failure under CI. `python -m sobert_testbed` starts the cluster tier for a person
(`make dev-cluster`). It imports none of sobert's packages.
"""

from __future__ import annotations

from pathlib import Path

# testbed/: its build scripts and their Go build modules live in testbed/scripts.
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


class MissingPrerequisiteError(RuntimeError):
    """Something the testbed needs is not on this machine (root, a tool); the message says what."""
