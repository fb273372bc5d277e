"""`sobertctl status|logs|cancel`: follow and stop runs on a cluster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sobert_api.crd import API_VERSION, KIND
from sobertctl.output import plain_yaml


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="Namespace (default: the kube context's).")
    parser.add_argument("--context", help="kube context (default: current).")


def register(sub) -> None:
    status = sub.add_parser("status", help="Runs and their phase, stage, step and loss.")
    status.add_argument("run", nargs="?", help="One run (default: all in the namespace).")
    status.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    _cluster_args(status)
    status.set_defaults(handler=run_status)

    logs = sub.add_parser("logs", help="Logs of a run's current (or given) stage.")
    logs.add_argument("run")
    logs.add_argument(
        "--stage", choices=["prepare", "pretrain", "convert", "finetune"], help="Default: the run's current stage."
    )
    logs.add_argument("--task", help="Finetune task (default: the first of the run's tasks).")
    logs.add_argument("-f", "--follow", action="store_true", help="Stream new lines.")
    logs.add_argument("--tail", type=int, default=200, help="Lines from the end (default 200).")
    _cluster_args(logs)
    logs.set_defaults(handler=run_logs)

    cancel = sub.add_parser("cancel", help="Stop a run: delete it and the jobs it owns (storage is kept).")
    cancel.add_argument("run")
    _cluster_args(cancel)
    cancel.set_defaults(handler=run_cancel)


def _connect(args):
    from sobertctl.kube import connect

    client, namespace = connect(args.context)
    return client, args.namespace or namespace


def run_status(args: argparse.Namespace) -> int:
    from sobertctl.kube import failure_details, list_runs, run_row, table

    client, namespace = _connect(args)
    if args.run:
        run = client.get(API_VERSION, KIND, args.run, namespace)
        if run is None:
            raise FileNotFoundError(f"SobertRun {namespace}/{args.run} not found")
        runs = [run]
    else:
        runs = list_runs(client, namespace)
    if args.output == "json":
        print(json.dumps(runs if not args.run else runs[0], indent=2, default=str))
    elif args.output == "yaml":
        print(plain_yaml(runs if not args.run else runs[0]))
    else:
        print(table([run_row(r) for r in runs], empty=f"No SobertRuns in namespace {namespace}."))
        details = failure_details(runs[0]) if args.run else ""
        if details:
            print(f"\n{details}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from kubernetes import client as k8s

    from sobert_operator.render.common import LABEL_RUN, LABEL_STAGE

    client, namespace = _connect(args)
    run = client.get(API_VERSION, KIND, args.run, namespace)
    if run is None:
        raise FileNotFoundError(f"SobertRun {namespace}/{args.run} not found")
    stage = args.stage or (run.get("status") or {}).get("stage") or "prepare"
    selector = f"{LABEL_RUN}={args.run},{LABEL_STAGE}={stage}"
    if stage == "finetune":
        from sobert_operator.render.finetune import LABEL_RAY_NODE, LABEL_TASK

        task = args.task or next(iter(((run.get("spec") or {}).get("finetune") or {}).get("tasks") or {}), None)
        selector += f",{LABEL_RAY_NODE}=submitter" + (f",{LABEL_TASK}={task}" if task else "")
    core = k8s.CoreV1Api()
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    if not pods:
        phase = (run.get("status") or {}).get("phase", "Pending")
        print(f"No pods yet for run {args.run}, stage {stage} (phase {phase}).", file=sys.stderr)
        return 0
    # The first pod (PyTorchJob master / the Job's pod / a RayJob's submitter) carries the driver's lines.
    pod_name = min(str(p.metadata.name) for p in pods if p.metadata)
    if args.follow:
        stream: Any = core.read_namespaced_pod_log(
            pod_name, namespace, follow=True, tail_lines=args.tail, _preload_content=False
        )
        for chunk in stream.stream():
            sys.stdout.write(chunk.decode(errors="replace"))
    else:
        sys.stdout.write(core.read_namespaced_pod_log(pod_name, namespace, tail_lines=args.tail))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from kubernetes.dynamic.exceptions import NotFoundError

    client, namespace = _connect(args)
    resource = client.dynamic.resources.get(api_version=API_VERSION, kind=KIND)
    try:
        resource.delete(name=args.run, namespace=namespace)
    except NotFoundError:
        raise FileNotFoundError(f"SobertRun {namespace}/{args.run} not found") from None
    print(f"sobertrun {args.run} cancelled: its jobs are being deleted; data and checkpoints stay in storage.")
    return 0
