"""The Helm chart's values, schema and CRD against their sources of truth (no servers, no helm)."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import jsonschema  # installed with ray[train] (the `finetune` extra)
import pytest
import yaml

from sobert_api.crd import crd_yaml
from sobert_operator.cluster import DEFAULT_CLUSTER_CONFIG, ClusterConfig, NodePool, RdmaSpec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sobert"
MANIFESTS = ROOT / "manifests"
CRD_NAME = "sobertruns.sobert.dev.yaml"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def helm_merge(base, override):
    """Helm's coalescing of a values file onto the defaults: maps merge, null deletes, else replace."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = helm_merge(out.get(key), value)
    return out


@pytest.fixture(scope="module")
def values():
    return load(CHART / "values.yaml")


@pytest.fixture(scope="module")
def schema():
    return json.loads((CHART / "values.schema.json").read_text())


# -- cluster config --------------------------------------------------------------------------


def test_default_cluster_values_are_the_default_cluster_config(values):
    assert values["cluster"] == DEFAULT_CLUSTER_CONFIG
    ClusterConfig.model_validate(values["cluster"])


def test_kustomize_cluster_config_is_the_default_and_dev_differs_only_in_the_trainer_image():
    base = load(MANIFESTS / "base" / "controller" / "cluster.yaml")
    assert base == DEFAULT_CLUSTER_CONFIG
    dev = load(MANIFESTS / "overlays" / "dev" / "cluster.yaml")
    ClusterConfig.model_validate(dev)
    assert dev["trainerImage"] != base["trainerImage"]
    assert {**dev, "trainerImage": base["trainerImage"]} == base


def test_ci_values_cluster_validates(values):
    ci = load(CHART / "ci" / "ci-values.yaml")
    merged = helm_merge(values, ci)
    cluster = ClusterConfig.model_validate(merged["cluster"])
    # What CI exercises beyond the defaults: a second pool with RDMA, Volcano, another tag.
    assert set(cluster.node_pools) == {"h100", "a100"}
    assert cluster.node_pools["a100"].rdma is not None
    assert cluster.scheduler.value == "volcano"
    assert merged["image"]["tag"] != values["image"]["tag"]
    ClusterConfig.model_validate(ci["cluster"])  # the CI file's cluster section stands alone too


# -- CRD -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHART / "crds" / CRD_NAME, MANIFESTS / "base" / "crds" / CRD_NAME])
def test_crd_files_are_the_generated_crd(path):
    assert path.read_text() == crd_yaml(), f"regenerate: python -m sobert_api.crd > {path.relative_to(ROOT)}"


# -- values.yaml documentation ---------------------------------------------------------------

KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_\"'./-]+):(\s|$)")
COMMENTED_KEY = re.compile(r"^\s*#\s*[A-Za-z0-9_\"'./-]+:(\s|$)")


def undocumented_keys(text: str) -> list[str]:
    """Key lines of a YAML values file not preceded by a `# --` comment (helm-docs style).

    The `# --` line must be in the comment block right above the key, with no commented-out key
    between the two. Lines inside a list item (`- key: ...` and its continuation) are values of
    that list, not keys."""
    lines = text.splitlines()
    missing = []
    list_indent: int | None = None
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- "):
            list_indent = indent if list_indent is None else min(list_indent, indent)
            continue
        if list_indent is not None:
            if indent > list_indent:
                continue
            list_indent = None
        match = KEY_LINE.match(line)
        if not match:
            continue
        documented = False
        for above in reversed(lines[:number]):
            text_above = above.strip()
            if not text_above.startswith("#"):
                break
            if text_above.startswith("# --"):
                documented = True
                break
            if COMMENTED_KEY.match(above):
                break
        if not documented:
            missing.append(f"line {number + 1}: {stripped}")
    return missing


def test_an_optional_enum_is_not_nullable_so_the_api_server_prunes_its_null():
    """The API server validates a null against `enum` even where the field is nullable: an unset
    `model.transformer_impl` (as `sobertctl submit` sends the spec) was refused with 422. Not
    nullable, its null is pruned before validation (test_kube_controller's CLI submit)."""
    from sobert_api.crd import spec_schema

    impl = spec_schema()["properties"]["model"]["properties"]["transformer_impl"]
    assert "nullable" not in impl and impl["enum"] == ["te", "local"]


def test_every_value_is_documented(values):
    assert undocumented_keys((CHART / "values.yaml").read_text()) == []


def test_the_documentation_check_catches_an_undocumented_key():
    text = (
        "# -- ok\na: 1\nb:\n  # -- ok\n  c: 2\n  # -- described\n  # d: commented out\n  e: 3\nl:\n  - x: 1\n    y: 2\n"
    )
    assert undocumented_keys(text) == ["line 3: b:", "line 8: e: 3", "line 9: l:"]


# -- values.schema.json ----------------------------------------------------------------------


def test_schema_is_valid_draft7_and_the_defaults_and_ci_values_validate(schema, values):
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values)
    jsonschema.Draft7Validator(schema).validate(helm_merge(values, load(CHART / "ci" / "ci-values.yaml")))


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"image": {"tag": "latest"}}, "tag"),
        ({"image": {"tag": ""}}, "tag"),
        ({"image": {"tag": 1}}, "tag"),
        ({"cluster": {"scheduler": "slurm"}}, "scheduler"),
        ({"cluster": {"pretrainTarget": "mpijob"}}, "pretrainTarget"),
        ({"cluster": {"nodePools": {"h100": {"gpusPerNode": -1}}}}, "gpusPerNode"),
        ({"cluster": {"nodePools": {"h100": {"cpu": 96}}}}, "cpu"),
        ({"cluster": {"node_pools": {}}}, "node_pools"),
        ({"replicas": 2}, "replicas"),
    ],
)
def test_schema_rejects_bad_values(schema, values, override, where):
    bad = helm_merge(values, override)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(bad))
    assert errors, override
    assert any(where in (json.dumps(list(e.absolute_path)) + e.message) for e in errors), errors


def test_schema_cluster_section_mirrors_the_cluster_config_model(schema):
    """Every ClusterConfig / NodePool / RdmaSpec field, by alias, and nothing else."""

    def aliases(model) -> set[str]:
        return {field.alias or name for name, field in model.model_fields.items()}

    definitions = schema["definitions"]
    assert set(definitions["clusterConfig"]["properties"]) == aliases(ClusterConfig)
    assert set(definitions["nodePool"]["properties"]) == aliases(NodePool)
    assert set(definitions["nodePool"]["properties"]["rdma"]["properties"]) == aliases(RdmaSpec)
    assert definitions["clusterConfig"]["properties"]["scheduler"]["enum"] == ["none", "kueue", "volcano"]
    assert definitions["clusterConfig"]["properties"]["pretrainTarget"]["enum"] == ["pytorchjob", "trainjob"]


def test_schema_covers_every_value(schema, values):
    """Each value key (outside `cluster`, checked above) is a schema property."""

    def walk(node, props, path):
        for key, value in node.items():
            assert key in props, f"{path}{key} is not in values.schema.json"
            sub = props[key]
            if "$ref" in sub:
                sub = schema["definitions"][sub["$ref"].rsplit("/", 1)[-1]]
            if isinstance(value, dict) and "properties" in sub and sub.get("additionalProperties") is False:
                walk(value, sub["properties"], f"{path}{key}.")

    walk({k: v for k, v in values.items() if k != "cluster"}, schema["properties"], "")


# -- images ----------------------------------------------------------------------------------


def test_image_tags_are_pinned_and_match_the_app_version(values):
    chart = load(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == "0.1.0"
    assert values["image"]["tag"] == chart["appVersion"]
    assert values["cluster"]["trainerImage"].endswith(":" + chart["appVersion"])
    overlay = load(MANIFESTS / "overlays" / "default" / "kustomization.yaml")
    assert overlay["images"] == [{"name": values["image"]["repository"], "newTag": chart["appVersion"]}]


def test_trainer_dockerfile_installs_the_pyproject_pins():
    """The trainer image pins megatron-core the way trainer/pyproject.toml does (it reads the rest
    of the pins, Ray's included, from the api and trainer pyproject.toml files at build time)."""
    project = tomllib.loads((ROOT / "trainer" / "pyproject.toml").read_text())["project"]
    dockerfile = (ROOT / "trainer" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3\b", dockerfile, re.M)
    pin = next(r for r in project["dependencies"] if r.startswith("megatron-core=="))
    assert pin in dockerfile, pin
    assert '"optional-dependencies"]["finetune"]' in dockerfile  # Ray Train, as the package declares it
