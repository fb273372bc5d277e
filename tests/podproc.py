"""A rendered pod's container run as local processes, the way a node would run it.

Each container runs in its own mount namespace (`unshare --mount`) with its volumes bind-mounted at
their real `mountPath`s and a private /etc/hosts that resolves the pods' DNS names, with the
environment the container declares (Secret references resolved) followed by what the training
operator appends. The process the caller gets is the container's main process: `unshare` and the
bootstrap below exec into the container's command, so a signal sent to it is what the kubelet sends.
Mount points that do not exist on this machine (`/scratch`, `/etc/sobert`) are created empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Runs inside the new mount namespace: bind every volume onto its mountPath, then exec the command.
_BOOTSTRAP = """
import json, os, subprocess, sys
config = json.loads(sys.argv[1])
for target, source in config["binds"].items():
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "--bind", source, target], check=True)
os.chdir(config["cwd"])
os.execvpe(config["command"][0], config["command"], config["env"])
"""


def operator_env(job: dict[str, Any], replica_type: str, index: int, master_port: int) -> dict[str, str]:
    """What Kubeflow Training Operator v1.9.0 appends to each container of a PyTorchJob with a Master
    and no elasticPolicy: `setPodEnv` in pkg/controller.v1/pytorch/envvar.go and
    `MasterEnvVarGenerator.Generate` in master.go. MASTER_PORT is the master container's port named
    `pytorchjob-port` (defaulted to 23456 by pytorch_defaults.go; the test passes a free port)."""
    spec = job["spec"]
    replicas = sum(r["replicas"] for r in spec["pytorchReplicaSpecs"].values())
    nproc = spec.get("nprocPerNode")
    nproc_int = int(nproc) if nproc and nproc.isdigit() else 1  # getNprocPerNodeInt
    master = f"{job['metadata']['name']}-master-0"  # replicaName(job, Master, 0)
    rank = index + 1 if replica_type.lower() == "worker" else index
    env = {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": str(master_port),
        "PET_MASTER_PORT": str(master_port),
        "MASTER_ADDR": master,
        "PET_MASTER_ADDR": master,
        "WORLD_SIZE": str(replicas * nproc_int),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
    }
    if nproc is not None:
        env["PET_NPROC_PER_NODE"] = nproc
    env["PET_NNODES"] = str(replicas)
    return env


def container_env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's `env` with `secretKeyRef`s resolved from `secrets` (name -> data)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def start_container(
    container: dict[str, Any],
    *,
    env: dict[str, str],
    binds: dict[str, Path],
    hosts: dict[str, str],
    root: Path,
    log: Path,
) -> subprocess.Popen:
    """Start `container`'s command as a pod would (see the module docstring). `binds` maps each
    mountPath to a directory or file on this machine; `root` holds the pod's private files."""
    root.mkdir(parents=True, exist_ok=True)
    hosts_file = root / "hosts"
    hosts_file.write_text(
        "127.0.0.1 localhost\n" + "".join(f"{address} {name}\n" for name, address in sorted(hosts.items()))
    )
    # The image's PATH: `python` is this environment's interpreter.
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    config = {
        "binds": {**{k: str(v) for k, v in binds.items()}, "/etc/hosts": str(hosts_file)},
        "command": container["command"],
        "env": {"PATH": path, "HOME": str(root), **env},
        "cwd": str(root),
    }
    handle = open(log, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _BOOTSTRAP, json.dumps(config)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
