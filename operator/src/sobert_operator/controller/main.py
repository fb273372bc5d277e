"""kopf registrations only; every handler is one call into `handlers`."""

from __future__ import annotations

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


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger, **_):
    handlers.startup(settings, logger)


@kopf.on.login()
def login(**kwargs):
    return handlers.login(**kwargs)


@kopf.on.create(*RUNS)
@kopf.on.resume(*RUNS)
@kopf.on.update(*RUNS, field="spec")
def reconcile_run(name, namespace, logger, **_):
    handlers.reconcile(name, namespace, logger)


@kopf.timer(*RUNS, interval=handlers.RESYNC_SECONDS, idle=handlers.RESYNC_SECONDS)
def resync_run(name, namespace, status, logger, **_):
    # Safety net for missed job events and for waits on outside state (secrets, CRDs).
    if not handlers.is_done(status):
        handlers.reconcile(name, namespace, logger)


@kopf.on.delete(*RUNS)
def delete_run(name, namespace, logger, **_):
    handlers.cleanup(name, namespace, logger)


for group, version, plural in OWNED_JOBS:

    @kopf.on.event(group, version, plural, labels={LABEL_RUN: kopf.PRESENT})
    def job_changed(labels, namespace, type, logger, **_):
        if type in ("ADDED", "MODIFIED", "DELETED"):
            handlers.reconcile(labels[LABEL_RUN], namespace, logger)
