"""What each kopf handler does: fetch, plan (pure), apply. Thin, synchronous (kopf runs sync
handlers in its thread pool, so the event loop never blocks)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from sobert_api import timestamps
from sobert_api.crd import API_VERSION, KIND
from sobert_api.dataset import dataset_id
from sobert_api.loading import SpecError, build_spec
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_operator.cluster import ClusterConfig, load_cluster_config
from sobert_operator.controller import metrics
from sobert_operator.controller.diffbase import SpecDiffBaseStorage
from sobert_operator.controller.job_views import JobViews
from sobert_operator.controller.requeue import Requeue
from sobert_operator.controller.secrets import SecretCache
from sobert_operator.cost.catalog import PriceCatalog, load_catalog
from sobert_operator.cost.devices import forecast_for, peak_tflops
from sobert_operator.cost.meter import MeterMemory, RunMeter
from sobert_operator.cost.policy import BudgetAction
from sobert_operator.cost.records import request_checkpoint
from sobert_operator.input_check import InputsUnreachable, check_inputs
from sobert_operator.kube.budget import (
    SUSPEND_PATCH,
    BudgetStep,
    accrued_since_priced,
    budget_step,
    gpu_price,
    open_pods,
    pod_allocations,
    vanished_allocations,
)
from sobert_operator.kube.client import KubeClient, PrerequisiteMissingError
from sobert_operator.kube.failure import (
    LOG_TAIL_LINES,
    FailedContainer,
    failure_status,
    failures_by_cause,
    first_with_log,
    last_error_line,
)
from sobert_operator.kube.observe import job_state
from sobert_operator.kube.plan import (
    Plan,
    condition,
    gone_after_success,
    is_terminal,
    plan,
    stage_kind,
    stage_objects,
)
from sobert_operator.kube.progress import last_progress, run_progress, storage_credentials
from sobert_operator.pipeline import STAGE_ORDER, Stage, StageState
from sobert_operator.preflight import preflight
from sobert_operator.published import observe
from sobert_operator.render.common import LABEL_RUN, LABEL_STAGE, object_name, storage_secret_name
from sobert_operator.results import finetune_results
from sobert_operator.run_record import RunConflictError, record_spec

RECONCILE_THREADS = 16
"""Handlers that run at once (kopf runs sync handlers in a thread pool; Python's default, 4 + CPUs,
kept 6 of them on 2 CPUs). A reconcile spends most of its time waiting on the API server, so more
threads than CPUs keep a burst of runs moving: with 200 runs created at once on 2 CPUs, the p99
to the PyTorchJob was 8.2 s with 6 threads and 5.6-6.5 s with 16, measured in turn
(`scripts/bench_controller.py`; 32 and 64 threads did no better)."""

RESYNC_SECONDS = 60.0
"""How long after its last reconcile a run that is not done is reconciled again, whatever happened
(`SOBERT_RESYNC_SECONDS`, the chart's `resyncSeconds`): the safety net for a missed job event and
the clock of what no event announces (spend, a Secret or CRD that appears, vanished pods)."""

RETRY_SECONDS = 60.0
"""How long after an unexpected error a reconcile is tried again (kopf's default handler backoff,
kopf 1.45.2 `_core/actions/execution.py` `DEFAULT_RETRY_DELAY`)."""

LEGACY_FINALIZER = "sobert.dev/cleanup"
"""The finalizer earlier controllers put on every run (for kopf's timer and delete handler).
kopf takes it off no more (this controller registers neither), so `run_changed` does: a run left
with it could never be deleted."""

RESYNC_THREADS = 4
"""Resyncs and retries that run at once, beside kopf's `RECONCILE_THREADS`."""

_state: dict[str, Any] = {}
_job_views = JobViews()
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _now() -> str:
    return timestamps.rfc3339(time.time())


def _event(run: Any, reason: str, message: str, warning: bool = False) -> None:
    """An Event on the run (what `kubectl describe sobertrun` lists). `kopf.event`, not
    `kopf.info`/`kopf.warn`: those are dropped below `settings.posting.level` (kopf 1.45
    `_core/engines/posting.py`), which is set for log lines."""
    kopf.event(run, type="Warning" if warning else "Normal", reason=reason, message=message)


def startup(settings: kopf.OperatorSettings, logger, owned: Mapping[tuple[str, str, str], Any]) -> None:
    settings.persistence.diffbase_storage = SpecDiffBaseStorage()
    settings.execution.max_workers = RECONCILE_THREADS
    # A run's log lines become Events on it from WARNING up (a retry, storage out of reach), through
    # the run's `kopf.ObjectLogger` (`run_changed`); kopf 1.45 posts no log line unless
    # `posting.loggers` is on (`_core/engines/posting.py`, `K8sPoster.filter`). Below WARNING they
    # would be a POST to the API server for every "created ..." line. The run's own Events
    # (`_event`, stages and budget) are posted whatever the level.
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    # No scanning: kopf would list CRDs and namespaces cluster-wide (kopf 1.45
    # `_core/reactor/observation.py`), which the chart's namespaced Role does not allow, and fail
    # nine times at each start. The resources watched are fixed and the namespace is given.
    settings.scanning.disabled = True
    path = os.environ.get("SOBERT_CLUSTER_CONFIG", "/etc/sobert/cluster.yaml")
    _state["cluster"] = load_cluster_config(path)
    _state["catalog"] = load_catalog(os.environ.get("SOBERT_PRICE_CATALOG") or None)
    metrics.serve(int(os.environ.get("SOBERT_METRICS_PORT", "9090")))
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        # Read KUBECONFIG now: the client library resolves its default path at import time.
        k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    _state["owned"] = owned
    client = KubeClient(connections=RECONCILE_THREADS + RESYNC_THREADS)
    client.refresh_discovery()  # prerequisites are checked against the cluster as it is now
    _state["client"] = client
    _state["secrets"] = SecretCache(lambda namespace, name: client.get("v1", "Secret", name, namespace))
    missing: dict[str, str] = {}
    for stage in STAGE_ORDER:
        api_version, kind = stage_kind(stage, _state["cluster"])
        try:
            client.require_kind(api_version, kind)
        except PrerequisiteMissingError as exc:
            missing[kind] = str(exc)
    _state["missing"] = missing
    for line in missing.values():
        logger.error("prerequisite missing: %s; runs that need it wait in phase Pending", line)
    shutdown()  # a controller restarted in this process without its cleanup (tests)
    _state["settings"] = settings
    _state["resync_seconds"] = float(os.environ.get("SOBERT_RESYNC_SECONDS", RESYNC_SECONDS))
    _state["run_loggers"] = {}
    _state["requeue"] = Requeue(_resync, workers=RESYNC_THREADS)


def shutdown() -> None:
    """Stop the resyncs (a controller restarted in the same process starts its own). A reconcile
    still under way may set a time on the stopped requeue: nothing fires it."""
    if "requeue" in _state:
        _state["requeue"].stop()


def _resync(key) -> None:
    namespace, name = key
    reconcile(name, namespace, logging.getLogger(__name__))


def login(**kwargs):
    # Explicit kubeconfig login: with the kubernetes client configured first, kopf's own
    # discovery can fail in one process (seen on the testbed).
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


def is_done(status: dict[str, Any] | None) -> bool:
    """Finished, and none of its pods left to price (a Ray cluster outlives its job by its TTL)."""
    return is_terminal(status) and not _pods_open((status or {}).get("cost"))


def _pods_open(cost: Mapping[str, Any] | None) -> bool:
    """Whether a cost status has pods open; it may be the merge patch the controller writes,
    where a pod no longer open is a null."""
    return any(pod is not None for pod in ((cost or {}).get("openPods") or {}).values())


def needs_reconcile(event: str | None, run: Mapping[str, Any]) -> bool:
    """Whether an event of a run itself calls for a reconcile: listed at start (None), added, or
    its spec changed since the controller last acted on it (`metadata.generation` against
    `status.observedGeneration`, which each reconcile writes). Its own status patches, which
    come back as events, do not."""
    if event in (None, "ADDED"):
        return True
    return run["metadata"].get("generation") != (run.get("status") or {}).get("observedGeneration")


def run_changed(event: str | None, run: kopf.Body, logger) -> None:
    """An event of a SobertRun: reconciled when it needs it (`needs_reconcile`), cleaned up and
    forgotten when deleted."""
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    if event == "DELETED":
        cleanup(name, namespace, run["metadata"]["uid"], logger)
        return
    # kopf hands `on.event` handlers a logger that posts no Events; the run's reconciles, whatever
    # calls them, log through one that does (from WARNING up, `settings.posting.level`).
    logger = _state["run_loggers"][(namespace, name)] = kopf.ObjectLogger(body=run, settings=_state["settings"])
    if LEGACY_FINALIZER in (run["metadata"].get("finalizers") or ()):
        _release_legacy_finalizer(run, logger)
    if needs_reconcile(event, run):
        reconcile(name, namespace, logger)


def _owned(namespace: str, kind: str, name: str, owner_uid: str) -> dict[str, Any] | None:
    """An object the controller created for the run `owner_uid`, as the watch last saw it
    (`main.owned`). Not one of a deleted run of the same name whose objects are not gone yet:
    the new run waits for them to go (creating its own is refused as already there, 409, until
    their deletion comes as an event). One just created may not be in the index yet, with the
    same 409 for a second create."""
    found = list(_state["owned"].get((namespace, kind, name), ()))  # one step under the GIL
    ours = [body for body in found if _owned_by(body, owner_uid)]
    return max(ours, key=lambda body: body["metadata"].get("creationTimestamp") or "", default=None)


def _owned_by(body: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in body["metadata"].get("ownerReferences") or ())


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def job_may_move_run(type: str | None, body: Mapping[str, Any], **_: Any) -> bool:
    """kopf's `when` filter of the jobs' events: only those `job_changed` acts on reach it, so the
    others cost no thread and no handler call. Called in kopf's event loop: cheap and read-only."""
    if type not in ("ADDED", "MODIFIED", "DELETED"):
        return False
    return _job_views.differs(body["metadata"]["namespace"], body, type)


def run_needs_handling(type: str | None, body: Mapping[str, Any], **_: Any) -> bool:
    """kopf's `when` filter of the runs' events: only those `run_changed` acts on reach it (most
    are the controller's own status patches coming back). Called in kopf's event loop: cheap and
    read-only."""
    finalizers = body["metadata"].get("finalizers") or ()
    return type == "DELETED" or LEGACY_FINALIZER in finalizers or needs_reconcile(type, body)


def job_changed(run: str, namespace: str, job: Any, event: str, logger) -> None:
    """An event of one of `run`'s jobs: reconciled only when it can move the run (`job_views`)."""
    if _job_views.changed(namespace, job, event):
        reconcile(run, namespace, logger)


def _release_legacy_finalizer(run: Mapping[str, Any], logger) -> None:
    """Take `LEGACY_FINALIZER` off a run an older controller put it on. The patch carries the
    run's resourceVersion: if the run changed since this event, it is refused (409) and the next
    event (a reconcile's status patch brings one) tries again."""
    metadata = run["metadata"]
    kept = [f for f in metadata.get("finalizers") or () if f != LEGACY_FINALIZER]
    body = {"metadata": {"finalizers": kept, "resourceVersion": metadata["resourceVersion"]}}
    try:
        _state["client"].patch(API_VERSION, KIND, metadata["name"], metadata["namespace"], body)
    except Exception as exc:  # tried again on the run's next event; its reconcile goes on
        if not (isinstance(exc, ApiException) and exc.status in (404, 409)):
            logger.warning("cannot remove the finalizer %s: %s", LEGACY_FINALIZER, exc)
        return
    logger.info("removed the finalizer %s an older controller added", LEGACY_FINALIZER)


def reconcile(name: str, namespace: str, logger) -> None:
    """Bring one SobertRun a step forward, then set its next resync (`Requeue`): none once it is
    done or gone. Serialised per run; safe to call any number of times. An error is logged and
    the reconcile retried: after the delay of a `kopf.TemporaryError`, else `RETRY_SECONDS`."""
    key = (namespace, name)
    logger = _state["run_loggers"].get(key, logger)  # the run's own, once its event has been seen
    requeue: Requeue = _state["requeue"]
    with _lock(namespace, name):
        try:
            left = _reconcile(name, namespace, logger)
        except kopf.TemporaryError as exc:
            delay = RETRY_SECONDS if exc.delay is None else exc.delay
            logger.warning("%s; retrying in %s s", exc, delay)
            requeue.after(key, delay)
        except Exception:
            logger.exception("reconcile failed; retrying in %s s", RETRY_SECONDS)
            requeue.after(key, RETRY_SECONDS)
        else:
            if left is None:  # gone: what this process kept of it goes too
                _forget(namespace, name)
            elif is_done(left):
                requeue.forget(key)
            else:
                requeue.after(key, _state["resync_seconds"])


def _forget(namespace: str, name: str) -> None:
    """A run found gone: its next resync, logger, meter memory and metric series."""
    key = (namespace, name)
    _state["requeue"].forget(key)
    _state["run_loggers"].pop(key, None)
    _state.get("meters", {}).pop(key, None)
    metrics.forget(name)


def _reconcile(name: str, namespace: str, logger) -> dict[str, Any] | None:
    """One pass over the run; the status it leaves (what it read, with what it wrote over it), or
    None when the run is gone or going."""
    client: KubeClient = _state["client"]
    run: Any = client.get(API_VERSION, KIND, name, namespace)  # a plain dict; kopf's helpers accept it
    if run is None or run["metadata"].get("deletionTimestamp"):
        return None
    status = run.get("status") or {}
    generation = run["metadata"].get("generation")
    if is_terminal(status) and status.get("observedGeneration") == generation:
        if not is_done(status):
            return {**status, "cost": _meter_until_gone(run, status, logger)}
        return status
    written: dict[str, Any] = {}

    def set_status(**fields: Any) -> None:
        client.patch_status(API_VERSION, KIND, name, namespace, {"observedGeneration": generation, **fields})
        written.update(fields)

    admitted = _admit(run, status, set_status)
    if admitted is None:
        return {**status, **written}
    spec, objects, secret = admitted
    jobs = {o.name: _owned(namespace, o.kind, o.name, run["metadata"]["uid"]) for o in objects}
    progressing = any(jobs.get(o.name) for o in objects if o.stage is Stage.pretrain)
    priced = _meter(
        spec, run, secret, status.get("cost") or {}, progressing, logger, status.get("stage"), any(jobs.values())
    )
    if priced.storage is not None:
        _record_spec(run, spec, priced.storage, logger)
    result = _plan(run, spec, status, jobs, objects, priced.step.cost_status["secondsLeft"], secret)
    if result.status.get("phase") == "Failed":
        _add_failure(run, result, logger)
    _apply_budget(run, spec, priced.step, priced.storage, result, jobs, objects, client, namespace, logger)
    _add_status_extras(run, spec, status, result, jobs, priced.storage, storage_credentials(secret), logger)
    for obj in result.create:
        kopf.adopt(obj, owner=run)
        if client.create(obj, namespace):
            if obj["kind"] != "ConfigMap":
                _job_views.created(namespace, obj)
            logger.info("created %s %s", obj["kind"], obj["metadata"]["name"])
    if result.event and result.status.get("phase") != status.get("phase"):
        reason, message = result.event
        _event(run, reason, message, warning=reason == "StageFailed")
    metrics.observe(spec.name, result.status)
    set_status(**{"message": None, **result.status})  # clear a stale message unless the plan sets one
    if is_terminal(result.status):  # its report, as it ends (again once its last pods are priced)
        _write_report(spec, secret, logger)
    return {**status, **written}


def _add_failure(run: Any, result: Plan, logger) -> None:
    """On the pass that finds a stage failed: the container that failed it, its exit and its last
    log lines (`.status.failure`), and its own error line added to the message."""
    client: KubeClient = _state["client"]
    name, namespace, stage = run["metadata"]["name"], run["metadata"]["namespace"], result.status["stage"]
    try:
        pods = client.list("v1", "Pod", namespace, f"{LABEL_RUN}={name},{LABEL_STAGE}={stage}")
    except ApiException as exc:
        logger.warning("cannot list the failed stage's pods: %s", exc.reason)
        return

    def read_log(failed: FailedContainer) -> str | None:
        try:
            return client.log_tail(failed.pod, namespace, failed.container, LOG_TAIL_LINES, failed.previous)
        except ApiException as exc:
            logger.warning("cannot read the log of %s/%s: %s", failed.pod, failed.container, exc.reason)
            return None

    found = first_with_log(failures_by_cause(pods), read_log)
    if found is None:  # its pods are gone (deleted, or never started)
        return
    failed, tail = found
    result.status["failure"] = {"stage": stage, **failure_status(failed, tail)}
    said = last_error_line(tail)
    exited = f"{failed.container} exited {failed.exit_code}, {failed.reason}"
    detail = f" (pod {failed.pod}: {exited}{': ' + said if said else ''})"
    result.status["message"] += detail
    for entry in result.status.get("conditions") or []:
        entry["message"] += detail
    if result.event:
        result.event = (result.event[0], result.event[1] + detail)


def _admit(run: Any, status: dict[str, Any], set_status: Callable[..., None]):
    """The run's spec, its stages' objects and its storage Secret, or None after recording in
    status why it cannot go on (an invalid spec, a missing operator, a missing Secret)."""
    cluster: ClusterConfig = _state["cluster"]
    namespace = run["metadata"]["namespace"]

    def hold(phase: str, reason: str, message: str, event: bool = True) -> None:
        if event and status.get("message") != message:
            _event(run, reason, message, warning=True)
        set_status(phase=phase, message=message, conditions=[condition("Ready", False, reason, message, _now())])

    try:
        spec = _run_spec(run)
        problems = preflight(spec, cluster)
        if problems:
            raise SpecError("; ".join(problems))
    except SpecError as exc:
        hold("Invalid", "InvalidSpec", str(exc))
        return None
    objects = stage_objects(spec, cluster)
    needed = [_state["missing"][o.kind] for o in objects if o.kind in _state.get("missing", {})]
    if needed:
        message = "; ".join(dict.fromkeys(needed))
        set_status(
            phase="Pending",
            message=f"prerequisites missing: {message}",
            conditions=[condition("Ready", False, "PrerequisitesMissing", message, _now())],
        )
        return None
    secret_name = storage_secret_name(spec, cluster)
    secret = _state["secrets"].get(namespace, secret_name)  # read once: checked, then used for storage
    if secret is None:
        message = f"storage Secret {namespace}/{secret_name} not found (needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        hold("Pending", "SecretMissing", message)
        return None
    if cluster.check_inputs and not status.get("stages"):  # before the first stage, once
        problems = _input_problems(spec, secret)
        if problems:
            hold("Invalid", "InvalidInput", "inputs: " + "; ".join(problems))
            return None
    return spec, objects, secret


def _input_problems(spec: RunSpec, secret: dict[str, Any]) -> list[str]:
    """What is wrong with the run's inputs, read with its Secret; retried later when storage
    cannot be reached."""
    try:
        return check_inputs(spec, storage_credentials(secret))
    except InputsUnreachable as exc:
        raise kopf.TemporaryError(f"cannot check the run's inputs: {exc}", delay=30) from exc


def _plan(run: Any, spec: RunSpec, status: dict[str, Any], jobs, objects, seconds_left, secret):
    """`kube.plan` over what the cluster holds; a stage whose jobs are gone after success (their
    TTL) is read from what the run published."""
    cluster: ClusterConfig = _state["cluster"]
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    dataset = dataset_id(spec)
    configmap = _owned(namespace, "ConfigMap", object_name(name, "spec"), run["metadata"]["uid"])
    published = None
    if gone_after_success(objects, jobs, status):  # removed by their TTL: storage says whether they finished
        try:
            storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, storage_credentials(secret))
            published = observe(spec, storage, dataset)
        except Exception as exc:
            raise kopf.TemporaryError(f"cannot read the run's published outputs: {exc}", delay=30) from exc
    return plan(
        spec,
        cluster,
        dataset,
        jobs,
        _now(),
        configmap is not None,
        seconds_left,
        published=published,
        peak_tflops=peak_tflops(spec, _state["catalog"], cluster),
    )


def _add_status_extras(run, spec, status, result, jobs, storage: Storage | None, credentials, logger) -> None:
    """What status shows beyond the stages, read from storage without ever stalling the run:
    training progress, finetune results (each once, as its task finishes), progress and ETA."""
    if result.status["stages"][Stage.pretrain.value]["state"] in ("running", "succeeded"):
        progress = _best_effort("progress", lambda: last_progress(spec, credentials), spec, logger)
        if progress:
            result.status["pretrain"] = progress
    finetune_states = result.status["stages"][Stage.finetune.value].get("tasks", {})
    finished = {task for task, state in finetune_states.items() if state["state"] == "succeeded"}
    known = status.get("finetune") or {}
    if finished - set(known):  # metrics.json is read once, when its task finishes

        def read_results() -> dict[str, Any]:
            return finetune_results(spec, Storage.open(spec.storage.uri, spec.storage.endpoint_url, credentials))

        known = _best_effort("finetune results", read_results, spec, logger) or known
    if known:
        result.status["finetune"] = known
    # The ETA's inputs are read with the ledger, when there is something to price; a finished run
    # needs none.
    if storage is not None or result.status.get("phase") in ("Succeeded", "PartiallySucceeded"):
        progress = _best_effort(
            "progress and ETA", lambda: _progress_and_eta(run, spec, result.status, jobs, storage), spec, logger
        )
        if progress:
            result.status["progress"] = progress


def _meter_memory(run: Mapping[str, Any]) -> MeterMemory:
    """What this process remembers of a run's meter between reconciles: kept by name, and begun
    again for a new run of that name (another uid)."""
    metadata = run["metadata"]
    meters = _state.setdefault("meters", {})
    key = (metadata["namespace"], metadata["name"])
    uid, memory = meters.get(key, (None, None))
    if memory is None or uid != metadata["uid"]:
        memory = MeterMemory()
        meters[key] = metadata["uid"], memory
    return memory


ETA_EVERY_SECONDS = 60  # the controller's ETA history: a line per stage change, else at most this often


def _progress_and_eta(run: Any, spec: RunSpec, status: dict[str, Any], jobs, storage: Storage | None) -> dict:
    """`.status.progress` (KEP-2779's fields for the run and its stage), also added to the run's
    ETA history for its report when storage is at hand (`RunMeter.record_eta`). The forecast is the
    one this process last made (read from storage after a restart)."""
    memory = _meter_memory(run)
    meter = RunMeter(spec, storage, _state["catalog"], _state["cluster"], memory) if storage is not None else None
    forecast = meter.last_forecast() if meter is not None else memory.forecast
    created = timestamps.parse(run["metadata"]["creationTimestamp"])
    assert created is not None  # the API server sets it on every object
    now = time.time()
    figures = run_progress(spec, status, jobs, forecast, created, now)
    if meter is not None:
        meter.record_eta(figures, now, ETA_EVERY_SECONDS)
    return figures


def _run_spec(run: Any) -> RunSpec:
    """The RunSpec a SobertRun carries (SpecError when it is invalid)."""
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    return build_spec(
        {**run.get("spec", {}), "name": name, "backend": "kubernetes"}, source=f"SobertRun {namespace}/{name}"
    )


def _meter_until_gone(run: Any, status: dict[str, Any], logger) -> dict[str, Any]:
    """A finished run whose pods are not all gone (a task's Ray cluster until its TTL): the ledger
    prices them until they are, then the run is done. The cost status written."""
    client: KubeClient = _state["client"]
    cluster: ClusterConfig = _state["cluster"]
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    spec = _run_spec(run)
    secret = _state["secrets"].get(namespace, storage_secret_name(spec, cluster))
    if secret is None:
        return status.get("cost") or {}
    priced = _meter(spec, run, secret, status.get("cost") or {}, False, logger)
    client.patch_status(API_VERSION, KIND, name, namespace, {"cost": priced.step.cost_status})
    if not _pods_open(priced.step.cost_status):
        _write_report(spec, secret, logger)
    return priced.step.cost_status


def _write_report(spec: RunSpec, secret: dict[str, Any], logger) -> None:
    """The run's report.json / .md / .html in its storage (`sobertctl report` reads the same)."""
    from sobert_operator.report import write_report

    def write() -> bool:
        storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, storage_credentials(secret))
        write_report(spec, storage)
        return True

    if _best_effort("the report", write, spec, logger):
        logger.info("report of %s written", spec.name)


@dataclass
class Priced:
    """The run's spend as the controller last priced it."""

    spent: float
    burn: float
    forecast: float | None
    calibrated: bool
    storage: Storage | None = None  # the run's storage, when it was read for this
    step: Any = None  # the budget policy's BudgetStep


def _meter(
    spec, run, secret, previous, progressing: bool, logger, stage: str | None = None, has_jobs: bool = True
) -> Priced:
    """The run's spend from its pods (`kube/budget.py`) on its meter (`cost/meter.py`), and the
    budget policy's next step. Its pods are listed unless it has none to find: no job of its
    exists (`has_jobs`) and none of its pods is still open in the ledger.

    Storage is read only when there is something new to price (the run has pods) or to calibrate
    (pretraining is under way and the forecast is not calibrated yet), and not for a minute after it
    failed: a slow or unreachable bucket must never stall the state machine of every run.
    """
    client: KubeClient = _state["client"]
    cluster: ClusterConfig = _state["cluster"]
    catalog: PriceCatalog = _state["catalog"]
    namespace = run["metadata"]["namespace"]
    key = (namespace, spec.name)
    was_open = previous.get("openPods") or {}
    pods = []
    try:
        if has_jobs or was_open:
            pods = client.list("v1", "Pod", namespace, f"{LABEL_RUN}={spec.name}")
    except Exception as exc:  # e.g. a Role from an older chart without pods/list
        logger.warning("pods of %s unavailable for the ledger: %s", spec.name, type(exc).__name__)
    live = pod_allocations(pods, spec, cluster, catalog)
    now = time.time()
    wanted = bool(pods) or bool(was_open) or (progressing and not previous.get("forecastCalibrated", False))
    priced = None
    if wanted and _state.setdefault("storage_backoff", {}).get(key, 0) < now:
        try:
            seen = [*live, *vanished_allocations(was_open, live)]
            priced = _priced_from_storage(spec, run, secret, previous, seen, stage)
        except Exception as exc:  # keep the state machine going; retry storage in a minute
            logger.warning("cost of %s unavailable: %s", spec.name, type(exc).__name__)
            _state["storage_backoff"][key] = time.time() + 60
    if priced is None:  # the ledger unread (nothing new to price, or storage failing): the last
        # figures, plus what the running pods have cost since they were priced
        forecast = previous.get("forecastUsd")
        priced = Priced(
            spent=previous.get("spentUsd", 0.0) + accrued_since_priced(live, was_open, now),
            burn=previous.get("burnUsdPerHour", 0.0) if pods else 0.0,
            forecast=forecast if forecast is not None else forecast_for(spec, catalog, cluster).usd,
            calibrated=previous.get("forecastCalibrated", False),
        )
    # Nothing running: what the pretraining job will burn.
    burn = priced.burn or spec.parallel.world_size * gpu_price(spec, cluster, catalog)[1]
    priced.step = step = budget_step(spec, priced.spent, priced.forecast, burn, previous)
    step.cost_status["forecastCalibrated"] = priced.calibrated
    if priced.storage is not None:
        step.cost_status["forecastStage"] = stage
    # Running pods, to close any that vanish before they are seen ending; until the ledger has
    # recorded the ones that did (storage read), the ones known before stay open too. Status is
    # merge-patched: a pod no longer open is removed by a null.
    still_open = open_pods(live, now) if priced.storage is not None else {**was_open, **open_pods(live, now)}
    step.cost_status["openPods"] = {**dict.fromkeys(set(was_open) - set(still_open)), **still_open}
    return priced


def _priced_from_storage(spec, run, secret, previous, seen, stage: str | None) -> Priced:
    """The spend from the run's ledger with the allocations seen now; the forecast re-made from
    what the run measured until pretraining is calibrated, and once more as each stage begins
    (the dataset's tokens, each finished task's first epoch)."""
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, storage_credentials(secret))
    meter = RunMeter(spec, storage, _state["catalog"], _state["cluster"], _meter_memory(run))
    spend = meter.spend(seen)
    forecast, calibrated = previous.get("forecastUsd"), previous.get("forecastCalibrated", False)
    if not calibrated or previous.get("forecastStage") != stage:
        meter.admitted()
        refreshed = meter.reforecast(stage)
        forecast, calibrated = refreshed.usd, refreshed.assumptions["calibrated_tokens_per_s"] is not None
    return Priced(spend.usd, spend.burn_usd_per_hour, forecast, calibrated, storage)


def _apply_budget(run, spec, step: BudgetStep, storage, result, jobs, objects, client, namespace, logger) -> None:
    """Record spend in status; warn, ask for a checkpoint, suspend or resume as the policy says."""
    now = _now()
    result.status["cost"] = step.cost_status
    result.status.setdefault("conditions", [])
    result.status["conditions"] += [
        condition(t, ok, reason, message, now) for t, ok, reason, message in step.conditions
    ]
    if step.request_checkpoint:
        if storage is None:  # cannot ask now: ask (and tell) on the next resync
            step.cost_status["checkpointRequested"] = False
            step.events = [e for e in step.events if e[0] != "BudgetCheckpoint"]
        else:
            request_checkpoint(storage, spec.name, f"budget: {step.cost_status['action']}")
    for reason, message in step.events:
        _event(run, reason, message, warning=reason in ("BudgetExceeded", "BudgetWarning"))
    if step.suspend is not None:
        for obj in objects:
            job = jobs.get(obj.name)
            if job is not None and obj.kind in SUSPEND_PATCH and job_state(job) is StageState.running:
                client.patch(obj.api_version, obj.kind, obj.name, namespace, SUSPEND_PATCH[obj.kind](step.suspend))
                logger.info("%s %s %s", "suspended" if step.suspend else "resumed", obj.kind, obj.name)
    if step.action is BudgetAction.stop:
        result.create = [o for o in result.create if o["kind"] == "ConfigMap"]  # start nothing new
        result.status.update(phase="BudgetStopped", message=f"budget spent: {step.conditions[-1][3]}")
        result.event = None


def _record_spec(run: Any, spec: RunSpec, storage: Storage, logger) -> None:
    """The run's spec in its storage, as the local executor records it: `sobertctl report`,
    `finetune` and `eval` read it there. A different run's spec under this name is reported, not
    overwritten."""
    try:
        record_spec(spec, storage)
    except RunConflictError as exc:
        _event(run, "StorageConflict", str(exc), warning=True)
    except Exception as exc:
        logger.warning("spec of %s not recorded in storage: %s", spec.name, type(exc).__name__)


def _best_effort(what: str, read: Callable[[], Any], spec, logger) -> Any:
    """A status extra read from storage (progress, finetune results): an unreachable bucket logs a
    warning and yields None, it never stalls the run's state machine."""
    try:
        return read()
    except Exception as exc:
        logger.warning("%s of %s unavailable: %s", what, spec.name, type(exc).__name__)
        return None


def cleanup(name: str, namespace: str, uid: str, logger) -> None:
    """A run deleted: delete everything it owned (the garbage collector would too, where it runs,
    through their owner references) and forget it. Serialised with the run's reconciles: one in
    flight finishes first, and one after it finds the run gone, so nothing created outlives this.
    Only what this run (`uid`) owned: a new run of the same name may already be there."""
    with _lock(namespace, name):
        try:
            _cleanup(name, namespace, uid, logger)
        finally:
            # A reconcile right after: it finds the run gone and forgets it (`_forget`), or
            # reconciles a new run of the same name, whose memory this must not touch.
            _state["requeue"].after((namespace, name), 0)


def _cleanup(name: str, namespace: str, uid: str, logger) -> None:
    client: KubeClient = _state["client"]
    cluster: ClusterConfig = _state["cluster"]
    selector = f"{LABEL_RUN}={name}"
    served = [stage_kind(stage, cluster) for stage in STAGE_ORDER]
    kinds = {kind for kind in served if kind[1] not in _state.get("missing", {})} | {("v1", "ConfigMap")}
    deleted = sum(
        client.delete_labeled(api_version, kind, namespace, selector, owner_uid=uid)
        for api_version, kind in sorted(kinds)
    )
    logger.info("deleted %d object(s) owned by %s", deleted, name)
