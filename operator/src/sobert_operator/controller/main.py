"""kopf registrations only; every handler is one call into `handlers`."""

from __future__ import annotations

import os

import kopf

from sobert_api.crd import GROUP, PLURAL, VERSION
from sobert_operator.controller import handlers
from sobert_operator.render.common import LABEL_RUN

RUNS = (GROUP, VERSION, PLURAL)
OWNED_JOBS = [
    ("batch", "v1", "jobs"),
    ("kubeflow.org", "v1", "pytorchjobs"),
    ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    ("ray.io", "v1", "rayjobs"),
]
SPEC_CONFIGMAPS = ("", "v1", "configmaps")
# Read here, when kopf loads the registrations, not in `handlers` (which other code may import
# first); the chart's `resyncSeconds` sets it.
RESYNC_SECONDS = float(os.environ.get("SOBERT_RESYNC_SECONDS", "60"))


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger, owned: kopf.Index, **_):
    handlers.startup(settings, logger, owned)


@kopf.on.login()
def login(**kwargs):
    return handlers.login(**kwargs)


@kopf.on.create(*RUNS)
@kopf.on.resume(*RUNS)
@kopf.on.update(*RUNS, field="spec")
def reconcile_run(name, namespace, logger, **_):
    handlers.reconcile(name, namespace, logger)


@kopf.timer(*RUNS, interval=RESYNC_SECONDS, idle=RESYNC_SECONDS)
def resync_run(name, namespace, status, logger, **_):
    # Safety net for missed job events and for waits on outside state (secrets, CRDs).
    if not handlers.is_done(status):
        handlers.reconcile(name, namespace, logger)


@kopf.on.delete(*RUNS)
def delete_run(name, namespace, logger, **_):
    handlers.cleanup(name, namespace, logger)


def owned(namespace, name, body, **_):
    """The `owned` index: every object the controller creates for its runs (the stages' jobs, the
    spec ConfigMaps), by namespace, kind and name, as the watch last saw it. A reconcile reads its
    run's objects here instead of asking the API server for each: kopf calls no handler before
    the index holds every object listed at its start (kopf 1.45 `_core/reactor/processing.py`,
    `operator_indexed`), and keeps it to the watch's latest after that."""
    return {(namespace, body["kind"], name): dict(body)}


for group, version, plural in [*OWNED_JOBS, SPEC_CONFIGMAPS]:
    kopf.index(group, version, plural, labels={LABEL_RUN: kopf.PRESENT}, id="owned")(owned)


for group, version, plural in OWNED_JOBS:

    @kopf.on.event(group, version, plural, labels={LABEL_RUN: kopf.PRESENT})
    def job_changed(labels, namespace, body, type, logger, **_):
        if type in ("ADDED", "MODIFIED", "DELETED"):
            handlers.job_changed(labels[LABEL_RUN], namespace, body, type, logger)
