"""The packages' layering (docs/architecture.md), as import-linter checks it in `make lint`: the
trainer and the operator stand on the contract and never import each other, the contract and the
operator import nothing of the training stack, the testbed imports none of sobert's packages. The
check is run on the repository, and on small trees that break each rule, to show it can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("sobert_api", "sobert_trainer", "sobert_operator", "sobertctl", "sobert_testbed")


def lint_imports(root: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": ":".join(map(str, pythonpath)), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_repository_keeps_its_layers():
    sources = [ROOT / package / "src" for package in ("api", "operator", "trainer", "testbed")]
    result = lint_imports(ROOT, sources + [Path(p) for p in sys.path if "site-packages" in p])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout, result.stdout


def make_tree(root: Path, imports: dict[str, str]) -> Path:
    """The five packages as empty modules, except those in `imports` (package -> an import
    statement it makes), and the repository's import-linter contracts."""
    for package in PACKAGES:
        (root / "src" / package).mkdir(parents=True)
        (root / "src" / package / "__init__.py").write_text(imports.get(package, "") + "\n")
    text = (ROOT / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text[text.index("[tool.importlinter]") :])  # the last section
    return root


@pytest.mark.parametrize(
    ("imports", "broken"),
    [
        ({"sobert_operator": "import sobert_trainer"}, "never import the trainer BROKEN"),
        ({"sobertctl": "from sobert_trainer import data"}, "never import the trainer BROKEN"),
        ({"sobert_trainer": "import sobert_operator"}, "the contract on neither BROKEN"),
        ({"sobert_api": "import sobert_operator"}, "the contract on neither BROKEN"),
        ({"sobert_operator": "import torch"}, "the controller image has none) BROKEN"),
        ({"sobert_testbed": "import sobert_api"}, "imports none of sobert's packages BROKEN"),
    ],
)
def test_each_contract_fails_on_a_tree_that_breaks_it(tmp_path, imports, broken):
    tree = make_tree(tmp_path, imports)
    stubs = tmp_path / "site"
    (stubs / "torch").mkdir(parents=True)  # an external package to forbid, without torch itself
    (stubs / "torch" / "__init__.py").write_text("")
    result = lint_imports(tree, [tree / "src", stubs])
    output = " ".join(result.stdout.split())
    assert result.returncode != 0 and broken in output, result.stdout + result.stderr


def test_a_tree_that_keeps_every_rule_passes(tmp_path):
    allowed = {"sobert_operator": "import sobert_api", "sobert_trainer": "import sobert_api"}
    tree = make_tree(tmp_path, {**allowed, "sobertctl": "import sobert_operator"})
    result = lint_imports(tree, [tree / "src"])
    assert result.returncode == 0, result.stdout + result.stderr
