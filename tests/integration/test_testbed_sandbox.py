"""The process kubelet's containers (sobert_testbed.sandbox), checked as a node would run them:
a container runs as its user in its own namespaces, whatever image layout it has."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from sobert_testbed import MissingPrerequisiteError, sandbox

pytestmark = pytest.mark.integration


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        raise MissingPrerequisiteError("containers need root (namespaces, mounts)")
    name = f"sobert-t{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    sandbox.delete_pod_network(name)


def run_alpine(netns: str, root: Path, command: list[str], binds: list[tuple[str, str, bool]] = ()) -> str:
    """Run `command` in a container of the alpine layout as user 10001; its output."""
    layout = sandbox.image_layout("alpine:3.10")
    log = root / "log"
    handle = sandbox.start_container(
        netns=netns,
        hostname="pod",
        command=command,
        env=layout.env,
        workdir=layout.workdir,
        uid=10001,
        gid=10001,
        groups=[10001],
        binds=[*sandbox.container_binds(layout, root / "container"), *binds],
        log=log,
    )
    assert handle.wait(timeout=60) == 0, log.read_text()
    return log.read_text()


def test_a_container_without_python_in_its_image_runs_as_a_non_root_user(netns, tmp_path):
    """The Training Operator's init container (alpine, here with the nslookup shim) under a pod
    whose securityContext sets user 10001, as sobert's pods do. The bootstrap that sets the
    container up is Python, switched to that user before it execs the container's command; it
    must not need the host's Python after the switch (it lives under /root, 0700 on some hosts)."""
    output = run_alpine(netns, tmp_path, ["sh", "-c", "id -u; command -v nslookup"])
    assert output.split() == ["10001", "/usr/local/bin/nslookup"]


def test_a_mount_point_this_machine_lacks_is_made_inside_the_container_only(netns, tmp_path):
    """Every pod gets its ServiceAccount token at /var/run/secrets/kubernetes.io/serviceaccount,
    which a host does not have. The container must see it, and the host must not get the empty
    directory: software that finds /var/run/secrets/kubernetes.io takes itself to be in a pod
    (kubeflow-training 1.9.3 then reads the namespace file at import and fails without it)."""
    if Path("/var/run/secrets/kubernetes.io").exists():
        pytest.skip("this machine has /var/run/secrets/kubernetes.io of its own")
    token = tmp_path / "token"
    token.mkdir()
    (token / "namespace").write_text("pods")
    mount = ("/var/run/secrets/kubernetes.io/serviceaccount", str(token), True)
    output = run_alpine(netns, tmp_path, ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"], [mount])
    assert output == "pods"
    assert not Path("/var/run/secrets").exists()


def test_an_exec_probe_runs_in_the_workdir_the_container_sees(tmp_path):
    """A container's working directory can exist only in its own mount namespace (the trainer
    image's /home/sobert), and an exec probe must run there. The kubelet gave nsenter `--wd`,
    which opens the directory on the node before entering the container: every exec probe failed,
    so KubeRay's Ray pods never became Ready and their RayJobs stayed Initializing."""
    from sobert_testbed.kubelet import exec_command

    if os.geteuid() != 0:
        raise MissingPrerequisiteError("a mount namespace needs root")
    inside = tmp_path / "only-in-the-container"
    container = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs none {tmp_path} && mkdir {inside} && echo ready && exec sleep 120"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert container.stdout.readline().strip() == "ready"
        assert not inside.exists()  # the node does not see it
        command = exec_command(
            container.pid, 10001, 10001, {"PATH": "/usr/bin:/bin"}, str(inside), ["sh", "-c", "pwd; id -u"]
        )
        ran = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert (ran.returncode, ran.stdout.split()) == (0, [str(inside), "10001"]), ran.stderr
    finally:
        container.kill()
        container.wait()
