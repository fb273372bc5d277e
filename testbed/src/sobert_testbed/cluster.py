"""The cluster tier of the testbed: a Kubernetes where only the kubelet is emulated.

On top of `apiserver` (kube-apiserver + etcd, the upstream CRDs) this starts the real
kube-scheduler and kube-controller-manager (same build), a bridge for the pod network, one
process kubelet per node (`kubelet.py`), and the real operators, run out of cluster at the
versions `testbed/scripts/build-operators.sh` pins. Needs root (network namespaces, mounts).

Operators' webhooks: each operator makes its own serving certificate for `<service>.<namespace>.svc`
(as in-cluster) and writes its CA into its webhook configuration. The configurations are the
upstream ones (read from the operator's Go module at its pinned version) with each
`clientConfig.service` turned into a `url` with the same host name and the operator's local port;
the API server resolves those names to 127.0.0.1 through an /etc/hosts of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sobert_testbed import SCRIPTS, MissingPrerequisiteError, apiserver, images, sandbox, upstream
from sobert_testbed.apiserver import KubeTestbed, _free_port, _run
from sobert_testbed.kubelet import container_log, pod_dir

OPERATORS_SCRIPT = SCRIPTS / "build-operators.sh"


def operators_dir() -> Path:
    """The directory with the operators' binaries, built at the pinned versions (`upstream.py`)."""
    return Path(_run(["bash", str(OPERATORS_SCRIPT)], timeout=3600).splitlines()[-1])


@dataclass(frozen=True)
class Webhook:
    """An operator's webhook server: the Service name its certificate is made for, its port, and
    the upstream configuration documents to install (paths inside its Go module)."""

    service: str
    namespace: str
    port: int
    manifests: tuple[Path, ...]
    names: dict[str, str]  # upstream configuration name -> the name the operator patches


@dataclass
class Cluster:
    testbed: KubeTestbed
    gateway: str
    bridge: str
    workdir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)  # set when the cluster goes
    kubelets: dict[int, subprocess.Popen] = field(default_factory=dict)  # node index -> its kubelet
    node_options: dict[str, Any] = field(default_factory=dict)  # what `add_node` starts a kubelet with

    @property
    def kubeconfig(self) -> Path:
        return self.testbed.kubeconfig

    @property
    def hosts(self) -> Path:
        """The cluster's names as a process outside the cluster sees them (node 0 keeps it current)."""
        return self.workdir / "node-0" / "hosts"

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return self.testbed.kubectl(*args, **kwargs)

    def spawn(
        self, name: str, command: list[str], *, private: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """A host process with this cluster's names in its /etc/hosts (its own mount namespace),
        with a private directory at each of `private` (operators write their webhook certificates
        to a fixed path; each gets its own)."""
        mounts = f'mount --bind "{self.hosts}" /etc/hosts'
        for index, path in enumerate(private):
            own = self.private_dir(name, index)
            own.mkdir(parents=True, exist_ok=True)
            Path(path).mkdir(parents=True, exist_ok=True)
            mounts += f' && mount --bind "{own}" "{path}"'
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$0" "$@"', *command],
            stdout=open(self.workdir / f"{name}.log", "wb"),  # noqa: SIM115 - owned by the child
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **(env or {})},
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def private_dir(self, name: str, index: int) -> Path:
        return self.workdir / f"{name}-private-{index}"

    def pod_logs(self, namespace: str, name: str, uid: str, container: str) -> str:
        """What a node keeps of a pod's container output (the kubelet's /var/log/pods), every
        attempt in order: readable after the pod object is gone."""
        for node in sorted(self.workdir.glob("node-*")):
            root = pod_dir(node, namespace, name, uid)
            attempts = itertools.takewhile(Path.exists, (container_log(root, container, n) for n in itertools.count()))
            logs = "".join(path.read_text(errors="replace") for path in attempts)
            if logs:
                return logs
        return ""

    @contextlib.contextmanager
    def pod_history(self, namespace: str) -> Iterator[PodHistory]:
        """Every pod of `namespace` as last seen (a watch), deleted ones included, while the block runs."""
        history = PodHistory(self.kubeconfig, namespace)
        history.start()
        try:
            yield history
        finally:
            history.stop()

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=60)


class PodHistory(threading.Thread):
    """A watch on a namespace's pods: each pod's last state by uid, kept after it is deleted (so a
    pod's exit code can be read once the kubelet reported it and removed the pod)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        super().__init__(daemon=True, name=f"pod-history-{namespace}")
        from kubernetes import client, config

        self.api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.namespace = namespace
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> the pod as last seen
        self.deleted: set[str] = set()
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        from kubernetes import watch

        serialize = self.api.api_client.sanitize_for_serialization
        version = None
        while not self._halt.is_set():
            stream = watch.Watch().stream(
                self.api.list_namespaced_pod, self.namespace, resource_version=version, timeout_seconds=5
            )
            self.ready.set()
            for event in stream:
                pod = serialize(event["object"])
                version = pod["metadata"]["resourceVersion"]
                self.pods[pod["metadata"]["uid"]] = pod
                if event["type"] == "DELETED":
                    self.deleted.add(pod["metadata"]["uid"])

    def start(self) -> None:
        super().start()
        self.ready.wait(30)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every pod of that name seen, oldest first (a replica the operator recreated has a new uid)."""
        found = [pod for pod in list(self.pods.values()) if pod["metadata"]["name"] == name]  # the watch adds
        return sorted(found, key=lambda pod: pod["metadata"]["creationTimestamp"])

    def exit_codes(self, uid: str) -> dict[str, int]:
        """Container name -> exit code, of the containers the kubelet reported terminated."""
        statuses = (self.pods.get(uid, {}).get("status") or {}).get("containerStatuses") or []
        return {
            status["name"]: status["state"]["terminated"]["exitCode"]
            for status in statuses
            if (status.get("state") or {}).get("terminated")
        }


def _require_root() -> None:
    missing = [tool for tool in ("ip", "unshare", "nsenter", "openssl") if not _which(tool)]
    if os.geteuid() != 0 or missing:
        raise MissingPrerequisiteError(
            f"the cluster testbed needs root and {', '.join(missing) or 'iproute2/util-linux'}"
        )


def _which(tool: str) -> bool:
    return any(Path(d, tool).exists() for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"))


def sync_secret_volume(cluster: Cluster, namespace: str, name: str, directory: Path) -> None:
    """What the kubelet does for a Secret volume, for an operator running outside the cluster:
    keep `directory` holding the Secret's keys as files (cert-controller writes the webhook
    certificate into its Secret and waits for the kubelet to mount it into the pod)."""
    import base64

    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))

    def loop() -> None:
        while not cluster.stopped.is_set():
            try:
                data = api.read_namespaced_secret(name, namespace).data or {}
            except Exception:
                data = {}
            for key, value in data.items():
                path = directory / key
                content = base64.b64decode(value)
                if not path.exists() or path.read_bytes() != content:
                    path.write_bytes(content)
            cluster.stopped.wait(1)

    threading.Thread(target=loop, daemon=True, name=f"secret-volume-{name}").start()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not within {timeout:.0f}s")


# A lost node, sooner than a cluster's defaults but past any heartbeat a loaded machine delays (the
# process kubelet renews its Lease every 10 s): the node lifecycle controller marks a node whose
# Lease is 40 s old `Unknown` and taints it; its pods' default tolerations of that taint last 10 s
# (the DefaultTolerationSeconds admission plugin's, 300 s by default), then they are evicted.
NODE_MONITOR_GRACE_PERIOD = "40s"
DEFAULT_TOLERATION_SECONDS = 10


def start_control_plane_controllers(testbed: KubeTestbed, workdir: Path) -> list[subprocess.Popen]:
    """kube-scheduler and kube-controller-manager v1.35.4, out of cluster with the admin kubeconfig."""
    binaries = apiserver.control_plane()
    scheduler = subprocess.Popen(
        [
            str(binaries / "kube-scheduler"),
            f"--kubeconfig={testbed.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            "--v=1",
        ],
        stdout=open(workdir / "scheduler.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    manager = subprocess.Popen(
        [
            str(binaries / "kube-controller-manager"),
            f"--kubeconfig={testbed.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            f"--service-account-private-key-file={workdir / 'sa.key'}",
            f"--root-ca-file={workdir / 'ca.crt'}",
            "--use-service-account-credentials=false",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
            "--v=1",
        ],
        stdout=open(workdir / "controller-manager.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return [scheduler, manager]


def _webhook_configurations(hook: Webhook) -> list[dict[str, Any]]:
    documents = []
    for path in hook.manifests:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or not document.get("kind", "").endswith("WebhookConfiguration"):
                continue
            document["metadata"] = {"name": hook.names.get(document["metadata"]["name"], document["metadata"]["name"])}
            for webhook in document["webhooks"]:
                service = webhook["clientConfig"].pop("service")
                webhook["clientConfig"]["url"] = (
                    f"https://{hook.service}.{hook.namespace}.svc:{hook.port}{service.get('path', '/')}"
                )
            documents.append(document)
    return documents


def install_webhooks(cluster: Cluster, hook: Webhook) -> None:
    for document in _webhook_configurations(hook):
        cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(document))


def ensure_namespace(cluster: Cluster, name: str) -> None:
    if cluster.kubectl("get", "namespace", name, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", name)


CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"  # where cert-controller users read their certificate


def _start_webhook_operator(
    cluster: Cluster, name: str, hook: Webhook, secret: str, command: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen:
    """An operator whose cert-controller makes its webhook certificate: its namespace, the empty
    Secret the upstream manifests create, its webhook configurations, the process (a private
    certificate directory) and the Secret kept mounted there."""
    ensure_namespace(cluster, hook.namespace)
    cluster.kubectl("create", "secret", "generic", secret, "-n", hook.namespace)
    install_webhooks(cluster, hook)
    process = cluster.spawn(name, command, private=(CERT_DIR,), env=env)
    sync_secret_volume(cluster, hook.namespace, secret, cluster.private_dir(name, 0))
    return process


def start_training_operator(cluster: Cluster, init_container_template: Path | None = None) -> subprocess.Popen:
    """Kubeflow Training Operator v1.9.3 (cmd/training-operator.v1), PyTorchJob only, its
    validating webhook on a local port (pkg/cert/cert.go). `init_container_template`: the file
    its `--pytorch-init-container-template-file` flag names (the init container it adds to
    workers; without it, the operator's built-in one)."""
    module = upstream.TRAINING_OPERATOR.source()
    hook = Webhook(
        service="training-operator",
        namespace="kubeflow",
        port=_free_port(),
        manifests=(module / "manifests" / "base" / "webhook" / "manifests.yaml",),
        names={"validating-webhook-configuration": "validator.training-operator.kubeflow.org"},
    )
    command = [
        str(operators_dir() / "training-operator.v1"),
        "--enable-scheme=pytorchjob",
        f"--webhook-server-port={hook.port}",
        f"--metrics-bind-address=127.0.0.1:{_free_port()}",
        f"--health-probe-bind-address=127.0.0.1:{_free_port()}",
    ]
    if init_container_template is not None:
        command.append(f"--pytorch-init-container-template-file={init_container_template}")
    env = {"MY_POD_NAMESPACE": hook.namespace}
    return _start_webhook_operator(cluster, "training-operator", hook, "training-operator-webhook-cert", command, env)


def start_jobset(cluster: Cluster) -> subprocess.Popen:
    """JobSet v0.11.1 (the version Trainer v2.2.1 requires), with its mutating and validating
    webhooks (pkg/util/cert/cert.go; the names carry the kustomization's `jobset-` prefix)."""
    module = upstream.JOBSET.source()
    components = module / "config" / "components"
    apiserver.install_crds(cluster.testbed, [components / "crd" / "bases" / "jobset.x-k8s.io_jobsets.yaml"])
    hook = Webhook(
        service="jobset-webhook-service",
        namespace="jobset-system",
        port=_free_port(),
        manifests=(components / "webhook" / "manifests.yaml",),
        names={
            "mutating-webhook-configuration": "jobset-mutating-webhook-configuration",
            "validating-webhook-configuration": "jobset-validating-webhook-configuration",
        },
    )
    config = cluster.workdir / "jobset-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
                "kind": "Configuration",
                "leaderElection": {"leaderElect": False},
                "internalCertManagement": {"enable": True},
                "webhook": {"port": hook.port},
                "metrics": {"bindAddress": f"127.0.0.1:{_free_port()}"},
                "health": {"healthProbeBindAddress": f"127.0.0.1:{_free_port()}"},
            }
        )
    )
    command = [str(operators_dir() / "jobset"), f"--config={config}"]
    return _start_webhook_operator(cluster, "jobset", hook, "jobset-webhook-server-cert", command)


def start_trainer(cluster: Cluster) -> subprocess.Popen:
    """Kubeflow Trainer v2.2.1 (cmd/trainer-controller-manager) with its webhooks and its
    `torch-distributed` ClusterTrainingRuntime, as its manifests install them."""
    module = upstream.TRAINER.source()
    base = module / "manifests" / "base"
    apiserver.install_crds(cluster.testbed, [base / "crds" / "trainer.kubeflow.org_trainingruntimes.yaml"])
    hook = Webhook(
        service="kubeflow-trainer-controller-manager",
        namespace="kubeflow-system",
        port=_free_port(),
        manifests=(base / "webhook" / "manifests.yaml",),
        names={
            "validating-webhook-configuration": "validator.trainer.kubeflow.org",
            "mutating-webhook-configuration": "defaulter.trainer.kubeflow.org",
        },
    )
    config = cluster.workdir / "trainer-config.yaml"
    document = yaml.safe_load((base / "manager" / "controller_manager_config.yaml").read_text())
    document["health"]["healthProbeBindAddress"] = f"127.0.0.1:{_free_port()}"
    document["metrics"] = {"bindAddress": f"127.0.0.1:{_free_port()}", "secureServing": False}
    document["webhook"]["port"] = hook.port
    document["leaderElection"]["leaderElect"] = False
    document["statusServer"]["port"] = _free_port()
    config.write_text(yaml.safe_dump(document))
    command = [str(operators_dir() / "trainer-controller-manager"), f"--config={config}"]
    process = _start_webhook_operator(
        cluster, "trainer", hook, document["certManagement"]["webhookSecretName"], command
    )
    runtime = base / "runtimes" / "torch_distributed.yaml"
    deadline = time.monotonic() + 120  # its validating webhook must be up to admit the runtime
    while cluster.kubectl("apply", "--server-side", "-f", str(runtime), check=False).returncode != 0:
        assert time.monotonic() < deadline, (cluster.workdir / "trainer.log").read_text()[-3000:]
        time.sleep(2)
    return process


def start_kuberay(cluster: Cluster) -> subprocess.Popen:
    """KubeRay ray-operator v1.5.1; its webhooks are off by default (ENABLE_WEBHOOKS unset). It
    reaches each Ray head's dashboard at `<head-svc>.<ns>.svc.cluster.local:8265` through the
    cluster's names."""
    binary = operators_dir() / "ray-operator"
    module = upstream.KUBERAY.source()
    # The operator's other CRDs (the RayJob's is installed with the cluster): it watches all three kinds.
    bases = module / "config" / "crd" / "bases"
    apiserver.install_crds(cluster.testbed, [bases / "ray.io_rayclusters.yaml", bases / "ray.io_rayservices.yaml"])
    return cluster.spawn(
        "kuberay",
        [
            str(binary),
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{_free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{_free_port()}",
            "--log-stdout-encoder=console",
        ],
    )


WEBHOOK_NAMES = (
    "training-operator.kubeflow.svc",
    "jobset-webhook-service.jobset-system.svc",
    "kubeflow-trainer-controller-manager.kubeflow-system.svc",
)


@contextlib.contextmanager
def cluster(
    workdir: Path, nodes: int = 2, node_labels: dict[str, str] | None = None, gpus: int = 8
) -> Iterator[Cluster]:
    """A started cluster with `nodes` process kubelets, each advertising `gpus` (fake) GPUs;
    operators are started by the caller."""
    _require_root()
    workdir.mkdir(parents=True, exist_ok=True)
    octet = random.randint(200, 250)
    gateway, bridge = f"10.{octet}.0.1", f"sbr{os.getpid() % 100000:05d}"
    sandbox.ensure_bridge(bridge, f"{gateway}/16")
    api_hosts = workdir / "apiserver-hosts"
    api_hosts.write_text("127.0.0.1 localhost " + " ".join(WEBHOOK_NAMES) + "\n")
    sans = (
        f"IP:{gateway}",
        "IP:10.96.0.1",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    )
    tolerations = (
        f"--default-not-ready-toleration-seconds={DEFAULT_TOLERATION_SECONDS}",
        f"--default-unreachable-toleration-seconds={DEFAULT_TOLERATION_SECONDS}",
    )
    testbed = apiserver.start(workdir / "control-plane", address=gateway, sans=sans, hosts=api_hosts, flags=tolerations)
    result = Cluster(testbed, gateway, bridge, workdir)
    try:
        apiserver.install_crds(testbed, upstream.workload_crds())
        result.processes += start_control_plane_controllers(testbed, testbed.workdir)
        cert, key = apiserver.self_signed(workdir, "kubelet", "/CN=kubelet", f"IP:{gateway}")
        result.node_options = {"octet": octet, "tls": (cert, key), "labels": node_labels or {}, "gpus": gpus}
        for index in range(nodes):
            add_node(result, index)
        _wait(lambda: result.hosts.exists(), 60, "node-0's hosts file")

        def nodes_ready() -> bool:
            out = testbed.kubectl(
                "get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}", check=False
            )
            return out.stdout.split() == ["True"] * nodes

        _wait(nodes_ready, 60, f"{nodes} Ready nodes")
        _wait(
            lambda: testbed.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            60,
            "the default ServiceAccount",
        )
        yield result
    finally:
        _stop(result)


def add_node(cluster: Cluster, index: int) -> None:
    """Node `node-<index>` joins: its process kubelet registers it (a replacement for a lost node
    takes an index of its own, as a cloud's new VM takes a name of its own)."""
    options = cluster.node_options
    kubelet = _start_kubelet(cluster, index, options["octet"], options["tls"], options["labels"], options["gpus"])
    cluster.kubelets[index] = kubelet
    cluster.processes.append(kubelet)


def lose_node(cluster: Cluster, index: int) -> None:
    """Node `node-<index>` crashes: its kubelet dies, and the processes of its pods' containers with
    it, without a signal to trap. Its Node object stays, its Lease no longer renewed, for the node
    lifecycle controller to find. (Node 0 serves the cluster's DNS: lose another.)"""
    if index == 0:
        raise ValueError("node-0 serves the cluster's DNS and names; lose another node")
    kubelet = cluster.kubelets.pop(index)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(kubelet.pid, signal.SIGKILL)
    kubelet.wait(timeout=60)
    cluster.processes.remove(kubelet)
    images.sweep(f"{cluster.bridge}-node-{index}-")


def _start_kubelet(
    cluster: Cluster, index: int, octet: int, tls: tuple[Path, Path], labels: dict[str, str], gpus: int
) -> subprocess.Popen:
    """Node `node-<index>`'s process kubelet (`kubelet.py`), its pods on 10.<octet>.<index+1>.0/24;
    node 0 also serves the cluster's DNS and keeps the hosts file the host's processes use."""
    node_dir = cluster.workdir / f"node-{index}"
    node_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sobert_testbed.kubelet",
            f"--kubeconfig={cluster.testbed.kubeconfig}",
            f"--node=node-{index}",
            f"--workdir={node_dir}",
            f"--bridge={cluster.bridge}",
            f"--gateway={cluster.gateway}",
            f"--pod-subnet=10.{octet}.{index + 1}.",
            f"--api-port={int(cluster.testbed.server.rsplit(':', 1)[1])}",
            f"--log-port={_free_port()}",
            f"--tls-cert={tls[0]}",
            f"--tls-key={tls[1]}",
            *[f"--label={k}={v}" for k, v in labels.items()],
            f"--gpus={gpus}",
            *(["--serve-dns"] if index == 0 else []),
        ],
        stdout=open(cluster.workdir / f"kubelet-{index}.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(cluster: Cluster) -> None:
    """Stop every process of the cluster (SIGTERM, then SIGKILL), the control plane, and remove
    the pods' network namespaces and the bridge."""
    cluster.stopped.set()
    for process in reversed(cluster.processes):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(cluster.processes):
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
    cluster.testbed.stop()
    # What a node killed before its own cleanup left: runc containers, root filesystems, tmpfs.
    images.sweep(cluster.bridge)
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1]
        if line.startswith("tmpfs ") and target.startswith(f"{cluster.workdir}/"):
            subprocess.run(["umount", "--lazy", target], capture_output=True)
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("sobert-"):
            sandbox.delete_pod_network(line.split()[0])
    sandbox.delete_bridge(cluster.bridge)
