"""Each of the four distributions declares every third-party package its code imports, so that
an image or environment with exactly one package's declared dependencies can run it (the
controller image once lacked boto3). Imports are read from the source, function-level ones too."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

import pytest

from conftest import ROOT

# Imports a package makes only when the module is there, and what it does without.
OPTIONAL = {
    "trainer": {"transformer_engine": "the TE layer spec when TransformerEngine is installed (NGC image)"},
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(package: str) -> set[str]:
    project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {normalized(re.split(r"[\s\[=<>!;~]", r, maxsplit=1)[0]) for r in requirements}


def imported(package: str) -> dict[str, str]:
    """Top-level names of absolute imports in the package's source -> a file importing each."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", ["api", "operator", "trainer", "testbed"])
def test_every_third_party_import_is_a_declared_dependency(package):
    own = {p.name for p in (ROOT / package / "src").iterdir() if p.is_dir() and not p.name.endswith(".egg-info")}
    distributions = importlib.metadata.packages_distributions()
    wanted = declared(package)
    undeclared = []
    for name, where in imported(package).items():
        if name in sys.stdlib_module_names or name in own or name in OPTIONAL.get(package, {}):
            continue
        providers = {normalized(d) for d in distributions.get(name, [])}
        if name.startswith("sobert_"):
            providers = {normalized(name)}
        if not providers & wanted:
            undeclared.append(f"{name} (imported in {where}; provided by {sorted(providers) or 'nothing installed'})")
    assert not undeclared, f"{package}/pyproject.toml does not declare: " + "; ".join(undeclared)


def test_the_operator_and_the_contract_declare_no_training_stack():
    for package in ("api", "operator"):
        assert not declared(package) & {"torch", "megatron-core", "transformers", "tokenizers", "ray", "sobert-trainer"}
