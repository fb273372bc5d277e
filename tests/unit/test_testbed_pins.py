"""The operators the testbed builds (testbed/scripts/build-operators.sh) are those whose manifests
it installs (sobert_testbed.upstream): one version of each, so the CRDs the API server enforces
are the running operators' own."""

from __future__ import annotations

import re

from sobert_testbed import SCRIPTS, upstream


def test_the_built_operators_are_the_pinned_modules():
    script = (SCRIPTS / "build-operators.sh").read_text()
    built = dict(re.findall(r'"([\w./-]+)@(v[\w.-]+)"', script))
    for module in (upstream.TRAINING_OPERATOR, upstream.KUBERAY, upstream.TRAINER):
        packages = [path for path in built if path.startswith(module.path)]
        assert packages and {built[p] for p in packages} == {module.version}, (module, built)
    jobset = (SCRIPTS / "jobset" / "go.mod").read_text()
    assert re.search(rf"^\s*{re.escape(upstream.JOBSET.path)} {re.escape(upstream.JOBSET.version)}\b", jobset, re.M)
