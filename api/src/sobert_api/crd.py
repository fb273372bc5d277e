"""The SobertRun CustomResourceDefinition, generated from the RunSpec model (one source of truth).

`.spec` is a RunSpec document without `name` (that is `metadata.name`). `required` lists are
dropped because a `preset:` fills most fields; the structural schema still types and prunes every
field, and the controller validates the expanded spec with the same pydantic model as the CLI,
reporting errors as a condition.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from sobert_api.spec import RunSpec

GROUP = "sobert.dev"
VERSION = "v1alpha1"
KIND = "SobertRun"
PLURAL = "sobertruns"
API_VERSION = f"{GROUP}/{VERSION}"


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Resolve $ref, turn Optional into nullable, drop what OpenAPI v3 structural schemas reject."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema["$ref"].rsplit("/", 1)[-1]])
        return _inline({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        # propertyNames (a map's key enum, e.g. finetune.tasks) is not allowed in a CRD schema;
        # the controller's RunSpec validation still rejects an unknown key, as Invalid.
        if key in ("title", "$defs", "required", "default", "propertyNames"):
            continue
        if key == "additionalProperties" and not isinstance(value, dict):
            continue  # extra="forbid" on models: the API server prunes unknown fields anyway
        out[key] = _inline(value, defs)
    options = out.pop("anyOf", None)
    if options is not None:
        concrete = [o for o in options if o.get("type") != "null"]
        if len(concrete) == 1:
            out = {**concrete[0], **out, "nullable": True} if len(concrete) < len(options) else {**concrete[0], **out}
        else:  # not expected in RunSpec; keep it permissive rather than wrong
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "exclusiveMinimum" in out and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "enum" in out:
        # The API server checks a null against the enum even where the field is nullable, and
        # refuses it (listing null among the values does not help); a field that is not nullable
        # has its null pruned before validation instead, so an unset optional enum, as the CLI
        # sends it, arrives unset.
        out.pop("nullable", None)
    return out


def spec_schema() -> dict[str, Any]:
    raw = RunSpec.model_json_schema()
    schema = _inline(raw, raw.get("$defs", {}))
    schema["properties"].pop("name", None)
    return schema


def crd() -> dict[str, Any]:
    """The CRD manifest as a plain dict."""
    status_schema = {
        "type": "object",
        "description": "Observed state, written by the controller.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
        {"name": "Step", "type": "integer", "jsonPath": ".status.pretrain.step"},
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.progressPercentage"},
        {"name": "Preset", "type": "string", "jsonPath": ".spec.preset", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "sobertrun",
                "shortNames": ["sbr"],
                "categories": ["sobert"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A sobert run: prepare -> pretrain -> convert -> finetune, within a budget.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {**spec_schema(), "description": "A RunSpec (see sobert_api.spec)."},
                                "status": status_schema,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated from sobert_api.spec.RunSpec by `python -m sobert_api.crd`; do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    import sys

    sys.stdout.write(crd_yaml())
