"""What each kopf handler does: fetch, plan (pure), apply. Thin, synchronous (kopf runs sync
handlers in its thread pool, so the event loop never blocks)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import config as k8s_config

from sobert_api import paths
from sobert_api.crd import API_VERSION, KIND
from sobert_api.loading import SpecError, build_spec
from sobert_api.spec import RunSpec
from sobert_operator import timestamps
from sobert_operator.cluster import ClusterConfig, load_cluster_config
from sobert_operator.controller import metrics
from sobert_operator.cost.catalog import PriceCatalog, load_catalog
from sobert_operator.cost.devices import forecast_for, peak_tflops
from sobert_operator.cost.forecast import Measured
from sobert_operator.cost.ledger import summarize
from sobert_operator.cost.measured import read_measured
from sobert_operator.cost.policy import BudgetAction
from sobert_operator.cost.records import append_allocation, append_eta, read_ledger, request_checkpoint
from sobert_operator.kube.budget import (
    SUSPEND_PATCH,
    BudgetStep,
    accrued_since_priced,
    budget_step,
    gpu_price,
    merge_ledger,
    open_pods,
    pod_allocations,
    vanished_allocations,
)
from sobert_operator.kube.client import KubeClient, PrerequisiteMissingError
from sobert_operator.kube.observe import job_state
from sobert_operator.kube.plan import condition, gone_after_success, is_terminal, plan, stage_kind, stage_objects
from sobert_operator.kube.progress import last_progress, run_progress, storage_credentials
from sobert_operator.pipeline import STAGE_ORDER, Stage, StageState
from sobert_operator.preflight import preflight
from sobert_operator.published import observe
from sobert_operator.render.common import LABEL_RUN, object_name, storage_secret_name
from sobert_operator.results import finetune_results
from sobert_operator.run_record import RunConflictError, record_spec
from sobert_trainer.data.prepare import PrepareConfig
from sobert_trainer.pretrain.progress import read_progress
from sobert_trainer.storage import Storage

RESYNC_SECONDS = float(os.environ.get("SOBERT_RESYNC_SECONDS", "60"))
_state: dict[str, Any] = {}
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _now() -> str:
    return timestamps.rfc3339(time.time())


def startup(settings: kopf.OperatorSettings, logger) -> None:
    settings.persistence.finalizer = "sobert.dev/cleanup"
    settings.posting.level = 20  # INFO and above become Events
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
    client = KubeClient()
    client.refresh_discovery()  # prerequisites are checked against the cluster as it is now
    _state["client"] = client
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


def login(**kwargs):
    # Explicit kubeconfig login: with the kubernetes client configured first, kopf's own
    # discovery can fail in one process (seen on the testbed).
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


def is_done(status: dict[str, Any] | None) -> bool:
    """Finished, and none of its pods left to price (a Ray cluster outlives its job by its TTL)."""
    return is_terminal(status) and not ((status or {}).get("cost") or {}).get("openPods")


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def reconcile(name: str, namespace: str, logger) -> None:
    """Bring one SobertRun a step forward. Serialised per run; safe to call any number of times."""
    with _lock(namespace, name):
        _reconcile(name, namespace, logger)


def _reconcile(name: str, namespace: str, logger) -> None:
    client: KubeClient = _state["client"]
    cluster: ClusterConfig = _state["cluster"]
    run: Any = client.get(API_VERSION, KIND, name, namespace)  # a plain dict; kopf's helpers accept it
    if run is None or run["metadata"].get("deletionTimestamp"):
        return
    status = run.get("status") or {}
    generation = run["metadata"].get("generation")
    if is_terminal(status) and status.get("observedGeneration") == generation:
        if not is_done(status):
            _meter_until_gone(run, status, logger)
        return

    def set_status(**fields: Any) -> None:
        client.patch_status(API_VERSION, KIND, name, namespace, {"observedGeneration": generation, **fields})

    try:
        spec = _run_spec(run)
        problems = preflight(spec, cluster)
        if problems:
            raise SpecError("; ".join(problems))
    except SpecError as exc:
        message = str(exc)
        if status.get("message") != message:
            kopf.warn(run, reason="InvalidSpec", message=message)
        set_status(
            phase="Invalid", message=message, conditions=[condition("Ready", False, "InvalidSpec", message, _now())]
        )
        return
    objects = stage_objects(spec, cluster)
    needed = [_state["missing"][o.kind] for o in objects if o.kind in _state.get("missing", {})]
    if needed:
        message = "; ".join(dict.fromkeys(needed))
        set_status(
            phase="Pending",
            message=f"prerequisites missing: {message}",
            conditions=[condition("Ready", False, "PrerequisitesMissing", message, _now())],
        )
        return
    secret = storage_secret_name(spec, cluster)
    secret_obj = client.get("v1", "Secret", secret, namespace)  # read once: checked, then used for storage
    if secret_obj is None:
        message = f"storage Secret {namespace}/{secret} not found (needs AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        if status.get("message") != message:
            kopf.warn(run, reason="SecretMissing", message=message)
        set_status(
            phase="Pending", message=message, conditions=[condition("Ready", False, "SecretMissing", message, _now())]
        )
        return

    dataset_id = PrepareConfig.from_spec(spec).dataset_id()
    jobs = {o.name: client.get(o.api_version, o.kind, o.name, namespace) for o in objects}
    configmap = client.get("v1", "ConfigMap", object_name(name, "spec"), namespace)
    previous_cost = status.get("cost") or {}
    progressing = any(jobs.get(o.name) for o in objects if o.stage is Stage.pretrain)
    step, storage = _meter(
        spec, cluster, client, namespace, secret_obj, previous_cost, progressing, logger, stage=status.get("stage")
    )
    credentials = storage_credentials(secret_obj)
    if storage is not None:
        _record_spec(run, spec, storage, logger)
    published = None
    if gone_after_success(objects, jobs, status):  # removed by their TTL: storage says whether they finished
        try:
            published = observe(
                spec, Storage.open(spec.storage.uri, spec.storage.endpoint_url, credentials), dataset_id
            )
        except Exception as exc:
            raise kopf.TemporaryError(f"cannot read the run's published outputs: {exc}", delay=30) from exc
    result = plan(
        spec,
        cluster,
        dataset_id,
        jobs,
        _now(),
        configmap is not None,
        step.cost_status["secondsLeft"],
        published=published,
        peak_tflops=peak_tflops(spec, _state["catalog"], cluster),
    )
    _apply_budget(run, spec, step, storage, result, jobs, objects, client, namespace, logger)
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
    if storage is not None or result.status.get("phase") == "Succeeded":
        progress = _best_effort(
            "progress and ETA",
            lambda: _progress_and_eta(run, spec, result.status, jobs, storage),
            spec,
            logger,
        )
        if progress:
            result.status["progress"] = progress
    for obj in result.create:
        kopf.adopt(obj, owner=run)
        if client.create(obj, namespace):
            logger.info("created %s %s", obj["kind"], obj["metadata"]["name"])
    if result.event and result.status.get("phase") != status.get("phase"):
        reason, message = result.event
        (kopf.warn if reason == "StageFailed" else kopf.info)(run, reason=reason, message=message)
    metrics.observe(spec.name, result.status)
    set_status(**{"message": None, **result.status})  # clear a stale message unless the plan sets one


def _measured(key: tuple[str, str], spec: RunSpec, storage: Storage, stage: str | None) -> Measured:
    """What the run measured (`cost/measured.py`), read from storage once per stage: it changes
    only as stages end, and the forecast is re-made on every resync until pretraining calibrates."""
    cached = _state.setdefault("measured", {}).get(key)
    if cached is None or cached[0] != stage:
        cached = _state["measured"][key] = (
            stage,
            read_measured(spec, storage, PrepareConfig.from_spec(spec).dataset_id()),
        )
    return cached[1]


ETA_EVERY_SECONDS = 60  # the controller's ETA history: a line per stage change, else at most this often


def _progress_and_eta(run: Any, spec: RunSpec, status: dict[str, Any], jobs, storage: Storage | None) -> dict:
    """`.status.progress` (KEP-2779's fields for the run and its stage), also appended to the
    run's ETA history for its report when storage is at hand, as the stage changes and at most
    once every ETA_EVERY_SECONDS (each append rewrites the object: an S3 read and write on the
    reconcile). The forecast is the one this process last made (read from storage after a restart)."""
    key = (run["metadata"]["namespace"], spec.name)
    forecast = _state.setdefault("forecasts", {}).get(key)
    if forecast is None and storage is not None:
        forecast = storage.read_json_if_exists(paths.forecast_key(spec.name))
    created = timestamps.parse(run["metadata"]["creationTimestamp"])
    assert created is not None  # the API server sets it on every object
    now = time.time()
    figures = run_progress(spec, status, jobs, forecast, created, now)
    stage = (figures.get("stage") or {}).get("name")
    last = _state.setdefault("eta_appended", {}).get(key)  # (stage, time) of this process's last line
    if storage is not None and (last is None or last[0] != stage or now - last[1] >= ETA_EVERY_SECONDS):
        append_eta(storage, spec.name, figures, now)
        _state["eta_appended"][key] = (stage, now)
    return figures


def _run_spec(run: Any) -> RunSpec:
    """The RunSpec a SobertRun carries (SpecError when it is invalid)."""
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    return build_spec(
        {**run.get("spec", {}), "name": name, "backend": "kubernetes"}, source=f"SobertRun {namespace}/{name}"
    )


def _meter_until_gone(run: Any, status: dict[str, Any], logger) -> None:
    """A finished run whose pods are not all gone (a task's Ray cluster until its TTL): the ledger
    prices them until they are, then the run is done."""
    client: KubeClient = _state["client"]
    cluster: ClusterConfig = _state["cluster"]
    name, namespace = run["metadata"]["name"], run["metadata"]["namespace"]
    spec = _run_spec(run)
    secret = client.get("v1", "Secret", storage_secret_name(spec, cluster), namespace)
    if secret is None:
        return
    step, _ = _meter(spec, cluster, client, namespace, secret, status.get("cost") or {}, False, logger)
    client.patch_status(API_VERSION, KIND, name, namespace, {"cost": step.cost_status})


def _meter(spec, cluster, client, namespace, secret, previous, progressing: bool, logger, stage: str | None = None):
    """The run's ledger and the policy's next step, as (BudgetStep, Storage or None).

    Storage is read only when there is something new to price (the run has pods) or to calibrate
    (pretraining is under way and the forecast is not calibrated yet), and not for a minute after it
    failed: a slow or unreachable bucket must never stall the state machine of every run.
    """
    catalog: PriceCatalog = _state["catalog"]
    key = (namespace, spec.name)
    try:
        pods = client.list("v1", "Pod", namespace, f"{LABEL_RUN}={spec.name}")
    except Exception as exc:  # e.g. a Role from an older chart without pods/list
        logger.warning("pods of %s unavailable for the ledger: %s", spec.name, type(exc).__name__)
        pods = []
    calibrated = previous.get("forecastCalibrated", False)
    was_open = previous.get("openPods") or {}
    live = pod_allocations(pods, spec, cluster, catalog)
    now = time.time()
    wanted = bool(pods) or bool(was_open) or (progressing and not calibrated)
    storage = None
    if wanted and _state.setdefault("storage_backoff", {}).get(key, 0) < time.time():
        try:
            storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, storage_credentials(secret))
            gone = vanished_allocations(was_open, live)
            ledger, ended = merge_ledger(read_ledger(storage, spec.name), [*live, *gone])
            for allocation in ended:
                append_allocation(storage, spec.name, allocation)
            spent = summarize(ledger, time.time())["usd"]
            burn = sum(a.devices * a.usd_per_hour for a in ledger if a.end is None)
            forecast = previous.get("forecastUsd")
            # Re-forecast from what the run measured until pretraining is calibrated, and once more
            # as each stage begins (the dataset's tokens, each finished task's first epoch).
            if not calibrated or previous.get("forecastStage") != stage:
                if not storage.exists(paths.submit_forecast_key(spec.name)):
                    storage.write_json(
                        paths.submit_forecast_key(spec.name), forecast_for(spec, catalog, cluster).as_dict()
                    )
                refreshed = forecast_for(
                    spec,
                    catalog,
                    cluster,
                    progress=read_progress(storage, paths.progress_key(spec.name)),
                    measured=_measured(key, spec, storage, stage),
                )
                storage.write_json(paths.forecast_key(spec.name), refreshed.as_dict())
                _state.setdefault("forecasts", {})[key] = refreshed.as_dict()
                forecast = refreshed.usd
                calibrated = refreshed.assumptions["calibrated_tokens_per_s"] is not None
        except Exception as exc:  # keep the state machine going; retry storage in a minute
            logger.warning("cost of %s unavailable: %s", spec.name, type(exc).__name__)
            _state["storage_backoff"][key] = time.time() + 60
            storage = None
    if storage is None:  # the ledger unread (nothing new to price, or storage failing): the last
        # figures, plus what the running pods have cost since they were priced
        spent = previous.get("spentUsd", 0.0) + accrued_since_priced(live, was_open, now)
        burn = previous.get("burnUsdPerHour", 0.0) if pods else 0.0
        forecast = previous.get("forecastUsd")
        if forecast is None:
            forecast = forecast_for(spec, catalog, cluster).usd
    if not burn:  # nothing running: what the pretraining job will burn
        burn = spec.parallel.world_size * gpu_price(spec, cluster, catalog)[1]
    step = budget_step(spec, spent, forecast, burn, previous)
    step.cost_status["forecastCalibrated"] = calibrated
    if storage is not None:
        step.cost_status["forecastStage"] = stage
    # Running pods, to close any that vanish before they are seen ending; until the ledger has
    # recorded the ones that did (storage read), the ones known before stay open too. Status is
    # merge-patched: a pod no longer open is removed by a null.
    still_open = open_pods(live, now) if storage is not None else {**was_open, **open_pods(live, now)}
    step.cost_status["openPods"] = {**dict.fromkeys(set(was_open) - set(still_open)), **still_open}
    return step, storage


def _apply_budget(run, spec, step: BudgetStep, storage, result, jobs, objects, client, namespace, logger) -> None:
    """Record spend in status; warn, ask for a checkpoint, suspend or resume as the policy says."""
    now = _now()
    result.status["cost"] = step.cost_status
    result.status.setdefault("conditions", [])
    result.status["conditions"] += [
        condition(t, ok, reason, message, now) for t, ok, reason, message in step.conditions
    ]
    if step.request_checkpoint:
        if storage is None:  # cannot ask now: ask on the next resync
            step.cost_status["checkpointRequested"] = False
        else:
            request_checkpoint(storage, spec.name, f"budget: {step.cost_status['action']}")
    if step.event:
        reason, message = step.event
        (kopf.warn if reason in ("BudgetExceeded", "BudgetWarning") else kopf.info)(run, reason=reason, message=message)
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
        kopf.warn(run, reason="StorageConflict", message=str(exc))
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


def cleanup(name: str, namespace: str, logger) -> None:
    """Delete everything the run owns (garbage collection would too, where it runs)."""
    client: KubeClient = _state["client"]
    cluster: ClusterConfig = _state["cluster"]
    selector = f"{LABEL_RUN}={name}"
    served = [stage_kind(stage, cluster) for stage in STAGE_ORDER]
    kinds = {kind for kind in served if kind[1] not in _state.get("missing", {})} | {("v1", "ConfigMap")}
    deleted = sum(client.delete_labeled(api_version, kind, namespace, selector) for api_version, kind in sorted(kinds))
    logger.info("deleted %d object(s) owned by %s", deleted, name)
