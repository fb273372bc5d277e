"""A real kube-apiserver + etcd on 127.0.0.1 for integration tests (no scheduler, no kubelet).

The tier controller-runtime calls envtest: the controller's logic against a real API server. The
binaries (Kubernetes v1.35 and its etcd) are built from the Go module proxy by
testbed/scripts/build-kube.sh and cached after the first build. This module makes a CA and
serving cert with openssl, a token file with an admin token, service-account keys, starts etcd and
the apiserver on free ports, writes a kubeconfig, and installs CRDs: the upstream ones, unmodified,
from each operator's Go module at its pinned version (`upstream.py`), so their schemas and CEL
rules (`x-kubernetes-validations`) are enforced as on a user's cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from sobert_testbed import SCRIPTS, upstream

BUILD_SCRIPT = SCRIPTS / "build-kube.sh"
TOOLS_SCRIPT = SCRIPTS / "fetch-helm-kubectl.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], **kwargs) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout.strip()


def control_plane() -> Path:
    """The directory with kube-apiserver, kube-controller-manager, kube-scheduler and etcd."""
    return Path(_run(["bash", str(BUILD_SCRIPT)], timeout=3600).splitlines()[-1])


def tools_dir() -> Path:
    """The directory with helm (3 and 4) and kubectl."""
    return Path(
        _run(["bash", str(TOOLS_SCRIPT)], env={**os.environ, "PYTHON": sys.executable}, timeout=600).splitlines()[-1]
    )


@dataclass
class KubeTestbed:
    workdir: Path
    kubeconfig: Path
    server: str
    token: str
    processes: list[subprocess.Popen]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(tools_dir() / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def user_kubeconfig(self, user: str, token: str) -> Path:
        """A kubeconfig for another identity (token-file user) to check RBAC."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        doc["users"] = [{"name": user, "user": {"token": token}}]
        doc["contexts"][0]["context"]["user"] = user
        path = self.workdir / f"kubeconfig-{user}"
        path.write_text(yaml.safe_dump(doc))
        return path

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def self_signed(workdir: Path, name: str, subject: str, sans: str | None = None) -> tuple[Path, Path]:
    """A self-signed certificate and key `workdir/<name>.crt|.key` (the testbed's CA; a process
    kubelet's serving certificate, `sans` e.g. "IP:10.0.0.1")."""
    cert, key = workdir / f"{name}.crt", workdir / f"{name}.key"
    extra = ["-addext", f"subjectAltName={sans}"] if sans else []
    _run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject, *extra,
         "-keyout", str(key), "-out", str(cert)]
    )  # fmt: skip
    return cert, key


def _certs(workdir: Path, sans: tuple[str, ...] = ()) -> None:
    ssl = ["openssl"]
    self_signed(workdir, "ca", "/CN=sobert-testbed-ca")
    names = ["IP:127.0.0.1", "DNS:localhost", *sans]
    (workdir / "san.cnf").write_text(f"subjectAltName={','.join(names)}\n")
    _run(
        [
            *ssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            str(workdir / "apiserver.key"),
            "-out",
            str(workdir / "apiserver.csr"),
        ]
    )
    _run(
        [
            *ssl,
            "x509",
            "-req",
            "-in",
            str(workdir / "apiserver.csr"),
            "-CA",
            str(workdir / "ca.crt"),
            "-CAkey",
            str(workdir / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(workdir / "san.cnf"),
            "-out",
            str(workdir / "apiserver.crt"),
        ]
    )
    _run([*ssl, "genrsa", "-out", str(workdir / "sa.key"), "2048"])
    _run([*ssl, "rsa", "-in", str(workdir / "sa.key"), "-pubout", "-out", str(workdir / "sa.pub")])


def start(
    workdir: Path,
    extra_tokens: dict[str, tuple[str, str]] | None = None,
    timeout: float = 60.0,
    *,
    address: str = "127.0.0.1",
    sans: tuple[str, ...] = (),
    hosts: Path | None = None,
    flags: tuple[str, ...] = (),
) -> KubeTestbed:
    """Start etcd + kube-apiserver. `extra_tokens`: user -> (token, comma-separated groups).
    `address`: where the API server also listens and what it advertises (the bridge address in
    cluster mode, so pods reach it); `sans`: more names for its serving certificate; `hosts`: an
    /etc/hosts for the API server alone (it resolves webhook URLs through it); `flags`: more
    kube-apiserver flags."""
    binaries = control_plane()
    workdir.mkdir(parents=True, exist_ok=True)
    _certs(workdir, sans)
    admin_token = secrets.token_hex(16)
    lines = [f'{admin_token},admin,admin,"system:masters"']
    for user, (token, groups) in (extra_tokens or {}).items():
        lines.append(f'{token},{user},{user},"{groups}"')
    (workdir / "tokens.csv").write_text("\n".join(lines) + "\n")
    etcd, etcd_url = _start_etcd(binaries, workdir)
    api_port = _free_port()
    apiserver = _start_apiserver(binaries, workdir, etcd_url, api_port, address, hosts, flags)
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = _write_kubeconfig(workdir, server, admin_token)
    testbed = KubeTestbed(workdir, kubeconfig, server, admin_token, [etcd, apiserver])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if apiserver.poll() is not None or etcd.poll() is not None:
            testbed.stop()
            raise RuntimeError(f"testbed exited early; see {workdir}/apiserver.log and etcd.log")
        probe = subprocess.run(
            ["curl", "-sk", "-H", f"Authorization: Bearer {admin_token}", f"{server}/readyz"],
            capture_output=True,
            text=True,
        )
        if probe.stdout.strip() == "ok":
            # The default namespace appears asynchronously after start-up.
            testbed.kubectl("get", "namespace", "default")
            return testbed
        time.sleep(0.3)
    testbed.stop()
    raise RuntimeError(f"kube-apiserver not ready in {timeout}s; see {workdir}/apiserver.log")


def _start_etcd(binaries: Path, workdir: Path) -> tuple[subprocess.Popen, str]:
    """etcd on 127.0.0.1 without fsync (throwaway data); the process and its client URL."""
    client, peer = _free_port(), _free_port()
    process = subprocess.Popen(
        [
            str(binaries / "etcd"),
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true",
            "--log-level=error",
        ],
        stdout=open(workdir / "etcd.log", "wb"),  # noqa: SIM115 - owned by the child for its lifetime
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{client}"


def _start_apiserver(
    binaries: Path, workdir: Path, etcd_url: str, port: int, address: str, hosts: Path | None, flags: tuple[str, ...]
) -> subprocess.Popen:
    """kube-apiserver with the testbed's certificates, token users and service-account keys."""
    wrapper: list[str] = []
    if hosts is not None:
        # Its own mount namespace, where /etc/hosts is `hosts` (the machine's stays untouched).
        wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind "{hosts}" /etc/hosts && exec "$0" "$@"',
        ]
    return subprocess.Popen(
        [
            *wrapper,
            str(binaries / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={'127.0.0.1' if address == '127.0.0.1' else '0.0.0.0'}",
            f"--advertise-address={address}",
            f"--secure-port={port}",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={workdir / 'apiserver.crt'}",
            f"--tls-private-key-file={workdir / 'apiserver.key'}",
            f"--client-ca-file={workdir / 'ca.crt'}",
            f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={workdir / 'sa.pub'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,OwnerReferencesPermissionEnforcement",
            "--disable-admission-plugins=StorageObjectInUseProtection",
            # `kubectl logs` reaches a (process) kubelet at its node's InternalIP.
            "--kubelet-preferred-address-types=InternalIP",
            *flags,
            "--v=1",
        ],
        stdout=open(workdir / "apiserver.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _write_kubeconfig(workdir: Path, server: str, token: str) -> Path:
    """The admin's kubeconfig (`system:masters` by token, the testbed CA)."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "testbed",
                "clusters": [
                    {"name": "testbed", "cluster": {"server": server, "certificate-authority": str(workdir / "ca.crt")}}
                ],
                "users": [{"name": "admin", "user": {"token": token}}],
                "contexts": [
                    {"name": "testbed", "context": {"cluster": "testbed", "user": "admin", "namespace": "default"}}
                ],
            }
        )
    )
    return kubeconfig


def create_namespace(testbed: KubeTestbed, name: str, pod_security: str | None = "restricted") -> None:
    """A namespace whose pods the API server's PodSecurity admission holds to `pod_security`
    (`privileged`, `baseline` or `restricted`; None: no label, the cluster's default, privileged),
    as a cluster administrator labels it: `pod-security.kubernetes.io/enforce`, at the level's
    latest version (kubernetes v1.35, staging/src/k8s.io/pod-security-admission/api/constants.go)."""
    labels = (
        {}
        if pod_security is None
        else {
            "pod-security.kubernetes.io/enforce": pod_security,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    )
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    testbed.kubectl("create", "-f", "-", input=json.dumps(namespace))


def install_crds(testbed: KubeTestbed, paths: list[Path]) -> None:
    for path in paths:
        # `create`, not client-side `apply`: the RayJob CRD is larger than the last-applied annotation allows.
        testbed.kubectl("create", "-f", str(path))
    for path in paths:
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        testbed.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@contextlib.contextmanager
def with_upstream_crds(workdir: Path) -> Iterator[KubeTestbed]:
    """A started testbed with the CRDs of the kinds sobert creates installed, each from its
    operator's Go module at the pinned version (`upstream.workload_crds`)."""
    crds = upstream.workload_crds()
    testbed = start(workdir)
    try:
        install_crds(testbed, crds)
        yield testbed
    finally:
        testbed.stop()
