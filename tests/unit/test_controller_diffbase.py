"""The controller's diff base storage builds the essence kopf's own builds, from less of the body."""

from __future__ import annotations

import json

import kopf

from sobert_operator.controller.diffbase import SpecDiffBaseStorage, trimmed


def _run_body() -> dict:
    return {
        "apiVersion": "sobert.dev/v1alpha1",
        "kind": "SobertRun",
        "metadata": {
            "name": "large-1",
            "namespace": "ml",
            "uid": "0b1c",
            "generation": 3,
            "resourceVersion": "4711",
            "labels": {"team": "nlp"},
            "annotations": {
                "kopf.zalando.org/last-handled-configuration": json.dumps({"spec": {"preset": "base"}}),
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "example.com/owner": "ml-platform",
            },
            "finalizers": ["sobert.dev/cleanup"],
            "managedFields": [{"manager": "kopf", "fieldsV1": {"f:status": {"f:phase": {}}}}] * 20,
        },
        "spec": {"preset": "large", "budget": {"usd": 800}, "data": {"posts": ["s3://dumps/Posts.xml"]}},
        "status": {"phase": "Pretraining", "stages": {"pretrain": {"state": "running"}}, "cost": {"spentUsd": 12.5}},
    }


def test_the_essence_is_kopfs_own_and_the_status_and_managed_fields_never_reach_it():
    raw = _run_body()
    ours = SpecDiffBaseStorage().build(body=kopf.Body(raw))
    assert ours == kopf.AnnotationsDiffBaseStorage().build(body=kopf.Body(raw))
    assert ours == {
        "spec": raw["spec"],
        "metadata": {"labels": {"team": "nlp"}, "annotations": {"example.com/owner": "ml-platform"}},
    }
    kept = trimmed(raw)
    assert "status" not in kept and set(kept["metadata"]) == {"name", "namespace", "labels", "annotations"}
    # An owned run (another operator's child) is marked in the annotation keys by its owners.
    owned = {**raw, "metadata": {**raw["metadata"], "ownerReferences": [{"uid": "f00", "kind": "Pipeline"}]}}
    assert SpecDiffBaseStorage().build(body=kopf.Body(owned)) == kopf.AnnotationsDiffBaseStorage().build(
        body=kopf.Body(owned)
    )
    assert raw["status"]["phase"] == "Pretraining" and len(raw["metadata"]["managedFields"]) == 20  # not changed


def test_handlers_tracking_other_fields_get_kopfs_build():
    raw = _run_body()
    fields = [("status", "phase")]
    ours = SpecDiffBaseStorage().build(body=kopf.Body(raw), extra_fields=fields)
    assert ours == kopf.AnnotationsDiffBaseStorage().build(body=kopf.Body(raw), extra_fields=fields)
    assert ours["status"] == {"phase": "Pretraining"}
