"""The CLI's Kubernetes side: SobertRun objects in the current kube context."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sobert_api import timestamps
from sobert_api.crd import API_VERSION, KIND
from sobert_api.spec import RunSpec


def run_object(spec: RunSpec) -> dict[str, Any]:
    """The SobertRun for a validated spec (`name` moves to metadata)."""
    body = json.loads(spec.model_dump_json(exclude={"name"}))
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": spec.name}, "spec": body}


def connect(context: str | None = None, kubeconfig: str | None = None):
    """A KubeClient for the current (or named) context, and that context's namespace."""
    import os

    from kubernetes import config

    from sobert_operator.kube.client import KubeClient

    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        config.load_incluster_config()
        namespace = "default"
    return KubeClient(), namespace


def list_runs(client, namespace: str) -> list[dict[str, Any]]:
    resource = client.dynamic.resources.get(api_version=API_VERSION, kind=KIND)
    return [item.to_dict() for item in resource.get(namespace=namespace).items]


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    if not timestamp:
        return "-"
    then = timestamps.parse(timestamp)
    assert then is not None
    return duration(int((now or dt.datetime.now(dt.UTC)).timestamp() - then))


def duration(seconds: int) -> str:
    """kubectl's short form: the largest whole unit (`3d`, `5h`, `12m`, `40s`)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def run_row(run: dict[str, Any], now: dt.datetime | None = None) -> dict[str, str]:
    """One table row; '-' for what is not known yet."""
    status = run.get("status") or {}
    pretrain = status.get("pretrain") or {}
    step = f"{pretrain['step']}/{pretrain.get('trainIters', '?')}" if pretrain.get("step") is not None else "-"
    loss = f"{pretrain['loss']:.3f}" if isinstance(pretrain.get("loss"), int | float) else "-"
    held_out = pretrain.get("validationLoss")
    tps = f"{pretrain['tokensPerSecond']:,.0f}" if isinstance(pretrain.get("tokensPerSecond"), int | float) else "-"
    real = pretrain.get("realTokenFraction")
    mfu = pretrain.get("mfu")
    return {
        "NAME": run["metadata"]["name"],
        "PRESET": (run.get("spec") or {}).get("preset") or "-",
        "PHASE": status.get("phase") or "Pending",
        "STAGE": status.get("stage") or "-",
        "STEP": step,
        "PROGRESS": progress_cell(status),
        "ETA": eta_cell(status),
        "LOSS": loss,
        "VAL LOSS": f"{held_out:.3f}" if isinstance(held_out, int | float) else "-",
        "TOK/S": tps,
        "REAL": f"{real:.0%}" if isinstance(real, int | float) else "-",
        "MFU": f"{mfu:.1%}" if isinstance(mfu, int | float) else "-",
        "FINETUNE": finetune_cell(status),
        "SPENT": spent_cell(status),
        "AGE": age(run["metadata"].get("creationTimestamp"), now),
        "MESSAGE": (status.get("message") or "-")[:80],
    }


def failure_details(run: dict[str, Any]) -> str:
    """For one run that failed or partly succeeded: the whole message, the container that failed
    its stage and the last lines it logged (`.status.failure`), each failed finetune task's reason
    and where its driver's log is; empty otherwise."""
    from sobert_api import paths

    status = run.get("status") or {}
    if status.get("phase") not in ("Failed", "PartiallySucceeded"):
        return ""
    lines = [f"message: {status.get('message') or '-'}"]
    tasks = ((status.get("stages") or {}).get("finetune") or {}).get("tasks") or {}
    storage = ((run.get("spec") or {}).get("storage") or {}).get("uri", "").rstrip("/")
    for task, entry in tasks.items():
        if entry.get("state") == "failed":
            log = f"{storage}/{paths.finetune_driver_log_key(run['metadata']['name'], task)}"
            lines.append(f"task {task} failed: {entry.get('message') or '-'}; driver log: {log}")
    failure = status.get("failure") or {}
    if failure:
        lines.append(
            f"failed:  stage {failure.get('stage')}, pod {failure.get('pod')}, container {failure.get('container')}: "
            f"exit {failure.get('exitCode')} ({failure.get('reason')}) at {failure.get('finishedAt') or '?'}"
        )
        tail = (failure.get("logTail") or "").rstrip("\n")
        if tail:
            lines += ["last log lines:", *(f"  {line}" for line in tail.splitlines())]
    return "\n".join(lines)


def progress_cell(status: dict[str, Any]) -> str:
    """The run's percent done, and its current stage's: `37% (pretrain 52%)`."""
    progress = status.get("progress") or {}
    if progress.get("progressPercentage") is None:
        return "-"
    stage = progress.get("stage")
    return f"{progress['progressPercentage']}%" + (
        f" ({stage['name']} {stage['progressPercentage']}%)" if stage else ""
    )


def eta_cell(status: dict[str, Any]) -> str:
    """Time left for the run, as `age` writes durations (`3h`, `12m`); `0s` once done."""
    seconds = (status.get("progress") or {}).get("estimatedRemainingSeconds")
    return "-" if seconds is None else duration(int(seconds))


def spent_cell(status: dict[str, Any]) -> str:
    """`$12.40/$800.00` (or just the spend without a budget)."""
    from sobert_operator.cost.money import usd

    cost = status.get("cost") or {}
    if cost.get("spentUsd") is None:
        return "-"
    budget = cost.get("budgetUsd")
    return usd(cost["spentUsd"]) + (f"/{usd(budget)}" if budget is not None else "")


def finetune_cell(status: dict[str, Any]) -> str:
    """Tasks done / listed, and each finished task's score: `2/4 quality 0.612 ner 0.401`."""
    tasks = ((status.get("stages") or {}).get("finetune") or {}).get("tasks") or {}
    if not tasks:
        return "-"
    done = sum(t.get("state") == "succeeded" for t in tasks.values())
    scores = [f"{task} {r['score']:.3f}" for task, r in (status.get("finetune") or {}).items()]
    scores += [f"{task} failed" for task, t in tasks.items() if t.get("state") == "failed"]
    return f"{done}/{len(tasks)}" + (f" {' '.join(scores)}" if scores else "")


def table(rows: list[dict[str, str]], empty: str) -> str:
    """Borderless table with UPPERCASE headers; an explicit line for the empty state."""
    if not rows:
        return empty
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers).rstrip()]
    lines += ["  ".join(r[h].ljust(widths[h]) for h in headers).rstrip() for r in rows]
    return "\n".join(lines)
