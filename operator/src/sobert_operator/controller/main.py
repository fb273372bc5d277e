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
SPEC_CONFIGMAPS = ("", "v1", "configmaps")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger, **indices):
    # Indices come by name among the keyword arguments (kopf's `ActivityFn` names none).
    handlers.startup(settings, logger, indices["owned"])


@kopf.on.cleanup()
def shutdown(**_):
    handlers.shutdown()


@kopf.on.login()
def login(**kwargs):
    return handlers.login(**kwargs)


# Runs are watched with `on.event`, not kopf's create/update/delete handlers and timers: those add
# a finalizer to every run and store kopf's state on it, two patches (and two more watch events)
# per run. A run is reconciled when it appears or its spec changes (`needs_reconcile`), when one
# of its jobs moves, and `resyncSeconds` after its last reconcile until it is done
# (`controller.requeue`). What it owns is deleted with it (`handlers.cleanup`; the garbage
# collector would too, through their owner references).
@kopf.on.event(*RUNS, when=handlers.run_needs_handling)
def run_changed(type, body, logger, **_):
    handlers.run_changed(type, body, logger)


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

    @kopf.on.event(group, version, plural, labels={LABEL_RUN: kopf.PRESENT}, when=handlers.job_may_move_run)
    def job_changed(labels, namespace, body, type, logger, **_):
        handlers.job_changed(labels[LABEL_RUN], namespace, body, type, logger)
