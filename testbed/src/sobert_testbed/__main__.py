"""`python -m sobert_testbed up|down|status [--workdir DIR]`: the cluster tier for a person to try
things on (`make dev-cluster`, `make dev-cluster-down`).

`up` starts, in the background, what the end-to-end tests run on: Kubernetes v1.35 (etcd,
kube-apiserver, kube-scheduler, kube-controller-manager), one process kubelet per node, the
Kubeflow Training Operator and KubeRay (and, with `--trainer`, JobSet and Kubeflow Trainer v2), and
an S3 server on the pod network. It returns once the cluster is ready and prints where its
kubeconfig is; `DIR/env` exports KUBECONFIG and the S3 endpoint and keys (the file is readable by
its owner only). `down` stops everything and removes the pods' network namespaces. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sobert_testbed import MissingPrerequisiteError

READY = "ready.json"
PIDFILE = "testbed.pid"
LOG = "testbed.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid(workdir: Path) -> int | None:
    path = workdir / PIDFILE
    if not path.exists():
        return None
    pid = int(path.read_text().strip())
    return pid if _alive(pid) else None


def serve(workdir: Path, nodes: int, gpus: int, trainer: bool, init_container_template: Path | None) -> int:
    """Run the cluster in this process until SIGTERM or SIGINT, then take it down."""
    from sobert_testbed import cluster as kubecluster
    from sobert_testbed import s3

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    labels = {"sobert.dev/pool": "cpu"}
    with kubecluster.cluster(workdir / "cluster", nodes=nodes, node_labels=labels, gpus=gpus) as cluster:
        kubecluster.start_training_operator(cluster, init_container_template)
        kubecluster.start_kuberay(cluster)
        if trainer:
            kubecluster.start_jobset(cluster)
            kubecluster.start_trainer(cluster)
        server = s3.start(workdir / "s3", address=cluster.gateway)
        try:
            env = workdir / "env"
            with os.fdopen(os.open(env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                handle.write(f"export KUBECONFIG={cluster.kubeconfig}\n")
                handle.writelines(f"export {key}={value}\n" for key, value in server.env().items())
            ready = {"kubeconfig": str(cluster.kubeconfig), "s3": server.endpoint_url, "env": str(env)}
            (workdir / READY).write_text(json.dumps(ready))
            stop.wait()
        finally:
            (workdir / READY).unlink(missing_ok=True)
            s3.stop(server)
    return 0


def up(
    workdir: Path, nodes: int, gpus: int, trainer: bool, init_container_template: Path | None, timeout: float
) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    if _pid(workdir) is None:
        (workdir / READY).unlink(missing_ok=True)
        command = [sys.executable, "-m", "sobert_testbed", "serve", f"--workdir={workdir}", f"--nodes={nodes}"]
        command += [f"--gpus={gpus}", *(["--trainer"] if trainer else [])]
        command += [f"--pytorch-init-container-template={init_container_template}"] if init_container_template else []
        with open(workdir / LOG, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (workdir / PIDFILE).write_text(str(process.pid))
        print(f"starting the cluster tier (log: {workdir / LOG}; the first start builds Kubernetes and the operators)")
        deadline = time.monotonic() + timeout
        while not (workdir / READY).exists():
            if process.poll() is not None:
                print(f"error: the testbed exited {process.returncode}; see {workdir / LOG}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"error: not ready after {timeout:.0f} s; see {workdir / LOG}", file=sys.stderr)
                return 1
            time.sleep(1)
    return status(workdir)


def status(workdir: Path) -> int:
    if _pid(workdir) is None or not (workdir / READY).exists():
        print(f"no cluster tier running from {workdir}")
        return 1
    from sobert_testbed.apiserver import tools_dir

    ready = json.loads((workdir / READY).read_text())
    print(f"kubeconfig: {ready['kubeconfig']}")
    print(f"S3:         {ready['s3']}")
    print(f"kubectl:    {tools_dir() / 'kubectl'} (helm, helm4 beside it)")
    print(f"\nsource {ready['env']}    # KUBECONFIG and the S3 endpoint and keys")
    print("make dev-cluster-down      # stop it")
    return 0


def down(workdir: Path, timeout: float = 180) -> int:
    pid = _pid(workdir)
    if pid is None:
        print(f"no cluster tier running from {workdir}")
        (workdir / PIDFILE).unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    (workdir / PIDFILE).unlink(missing_ok=True)
    print("cluster tier stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sobert_testbed", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--workdir", type=Path, default=Path(".dev-cluster"), help="Where its state and logs go.")
    parser.add_argument("--nodes", type=int, default=2, help="Process kubelets.")
    parser.add_argument("--gpus", type=int, default=1, help="(Fake) GPUs each node advertises.")
    parser.add_argument("--trainer", action="store_true", help="Also JobSet and Kubeflow Trainer v2 (TrainJob).")
    parser.add_argument(
        "--pytorch-init-container-template",
        type=Path,
        help="The Training Operator's --pytorch-init-container-template-file (its workers' init container).",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds `up` waits (cold builds included).")
    args = parser.parse_args(argv)
    workdir = args.workdir.absolute()
    template = args.pytorch_init_container_template
    template = template.absolute() if template else None
    try:
        if args.command == "serve":
            return serve(workdir, args.nodes, args.gpus, args.trainer, template)
        if args.command == "up":
            return up(workdir, args.nodes, args.gpus, args.trainer, template, args.timeout)
        if args.command == "down":
            return down(workdir)
        return status(workdir)
    except MissingPrerequisiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
