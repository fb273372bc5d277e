"""A process kubelet: the one emulated component of the testbed (see docs/testbed.md).

Run as its own process, one per node: `python -m sobert_testbed.kubelet --kubeconfig K --node N ...`.
It registers a Node (CPU, memory, pods and a fake `nvidia.com/gpu` capacity, so GPU pods
schedule), renews its Lease, and runs every pod the real kube-scheduler binds to it as processes
(`sandbox.py`): its own network namespace with a pod IP on the testbed's bridge, each container in
its own mount/PID/UTS namespaces with the pod's volumes at their `mountPath`s. It writes pod status
as the kubelet's status manager does, stops pods with SIGTERM and, after the grace period,
SIGKILL, and serves container logs to the API server (`kubectl logs`).

Emulated from Kubernetes v1.35 pkg/kubelet: `kubelet_pods.go` (makeEnvironmentVariables: env
order, `$(VAR)` expansion, field and resource refs, envFrom; getPhase), `status/status_manager.go`
(conditions and container statuses), `kuberuntime/kuberuntime_container.go` (killContainer:
SIGTERM, wait the grace period, SIGKILL), `volume/projected` + `serviceaccount` (the token
volume through TokenRequest), `pod_workers.go` (a pod's lifecycle, and the final delete with
grace 0 once its containers are stopped), `kubelet_node_status.go` + `nodelease` (registration,
heartbeat), `prober` (readiness: exec, httpGet, tcpSocket). A container whose image is in the
node's image store (buildah's) runs from it under runc (`oci.py`, `images.py`), with its memory
limit; the others are emulated from this checkout (`sandbox.IMAGES`). Not emulated: liveness and
startup probes, CPU limits, image pulls, preStop hooks, ephemeral containers, sidecar init
containers, pod `activeDeadlineSeconds`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sobert_testbed import dns, images, oci, sandbox

log = logging.getLogger("prockubelet")
KUBELET_VERSION = "v1.35.4-sobert-process-kubelet"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------
# API access with plain dicts


class Api:
    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        self.client = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.client)
        self.coordination = client.CoordinationV1Api(self.client)
        settings = self.client.configuration.auth_settings().get("BearerToken")
        self.auth = {"Authorization": settings["value"]} if settings else {}

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        from kubernetes.client.exceptions import ApiException

        config = self.client.configuration
        headers = {"Accept": "application/json", "Content-Type": content_type, **self.auth}
        response = self.client.call_api(method, config.host + path, header_params=headers, body=body)
        data = response.read() if hasattr(response, "read") else response.data
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason or data.decode(errors="replace")[:300])
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def try_get(self, path: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.get(path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


# --------------------------------------------------------------------------------------------
# Quantities and env


def _quantity(value: str) -> float:
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix, factor in suffixes.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


_VAR = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """`$(VAR)` expansion as in k8s.io/kubernetes/third_party/forked/golang/expansion: `$$` is a
    literal `$`, an undefined `$(VAR)` stays as written."""

    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(sub, text)


def _field(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path not in simple:
        raise ValueError(f"fieldRef {path!r} is not supported by the process kubelet")
    return simple[path]


# --------------------------------------------------------------------------------------------
# One pod


def _security(pod: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The container's securityContext over the pod's (runAsUser, runAsGroup, runAsNonRoot are in both)."""
    return {**(pod["spec"].get("securityContext") or {}), **(spec.get("securityContext") or {})}


def _backoff_seconds(failures: int) -> int:
    """The kubelet's back-off after `failures` earlier failures, of a container's restarts
    (CrashLoopBackOff) and of its image pulls alike: 10 s doubling to 5 min (its defaults)."""
    return min(10 * 2 ** min(failures, 5), 300)


def _additional_groups(pod: dict[str, Any]) -> list[int]:
    """The pod's supplementalGroups and its fsGroup: the groups every container's process gets
    besides its primary one (pkg/kubelet/kuberuntime/security_context.go, determineEffectiveSecurityContext)."""
    pod_security = pod["spec"].get("securityContext") or {}
    return [
        *pod_security.get("supplementalGroups", []),
        *([pod_security["fsGroup"]] if "fsGroup" in pod_security else []),
    ]


def image_container(
    pod: dict[str, Any],
    spec: dict[str, Any],
    env: dict[str, str],
    mounts: list[tuple[str, str, bool]],
    *,
    hostname: str,
    network_namespace: str,
    cgroups_path: str,
) -> oci.Container:
    """What the kubelet asks the runtime for (the CRI `ContainerConfig`, as
    pkg/kubelet/kuberuntime/kuberuntime_container.go generateContainerConfig and
    security_context.go build it): `$(VAR)`-expanded command and args, the resolved env, the
    security context, the volumes, the memory limit."""
    security = _security(pod, spec)
    own = spec.get("securityContext") or {}
    capabilities = own.get("capabilities") or {}
    limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    return oci.Container(
        command=tuple(expand(part, env) for part in spec.get("command") or ()),
        args=tuple(expand(part, env) for part in spec.get("args") or ()),
        env=tuple(env.items()),
        working_dir=spec.get("workingDir") or "",
        run_as_user=security.get("runAsUser"),
        run_as_group=security.get("runAsGroup"),
        supplemental_groups=tuple(_additional_groups(pod)),
        read_only_root=bool(own.get("readOnlyRootFilesystem")),
        allow_privilege_escalation=own.get("allowPrivilegeEscalation"),
        capabilities_add=tuple(capabilities.get("add") or ()),
        capabilities_drop=tuple(capabilities.get("drop") or ()),
        mounts=tuple(oci.Mount(target, source, readonly) for target, source, readonly in mounts),
        memory_limit_bytes=int(_quantity(str(limit))) if limit is not None else None,
        hostname=hostname[:63],
        network_namespace=network_namespace,
        cgroups_path=cgroups_path,
        seccomp=(security.get("seccompProfile") or {}).get("type"),
    )


class ContainerState:
    def __init__(self, spec: dict[str, Any], init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.handle: subprocess.Popen | None = None
        self.restart_count = 0
        self.started_at: str | None = None
        self.terminated: dict[str, Any] | None = None
        self.last_terminated: dict[str, Any] | None = None
        self.waiting: tuple[str, str] | None = ("ContainerCreating", "")
        self.next_start = 0.0
        self.start_failures = 0  # starts that failed before the container ran (a pull, a config error)
        self.probe_ok = "readinessProbe" not in spec  # no probe: ready once running
        self.exec_context: tuple[int, int, dict[str, str], str] | None = None  # uid, gid, env, workdir
        self.runc: oci.RuncContainer | None = None  # run from its image (else emulated, `sandbox.IMAGES`)

    def status(self, image_id: str) -> dict[str, Any]:
        if self.handle is not None and self.terminated is None:
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None and self.waiting is None:
            state = {"terminated": self.terminated}
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        running = "running" in state
        status = {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": image_id,
            "ready": running and not self.init and self.probe_ok,
            "started": running,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.handle is not None:
            status["containerID"] = self.container_id()
        return status

    def container_id(self) -> str:
        return f"runc://{self.runc.id}" if self.runc else f"sobert-process://{self.handle.pid}"  # type: ignore[union-attr]


def pod_dir(node_workdir: Path, namespace: str, name: str, uid: str) -> Path:
    """Where a node keeps a pod's files: its volumes, containers and logs (the kubelet's
    /var/lib/kubelet/pods and /var/log/pods in one)."""
    return node_workdir / "pods" / f"{namespace}_{name}_{uid[:8]}"


def container_log(pod_root: Path, container: str, attempt: int) -> Path:
    """A container's output, one file per attempt (the kubelet's /var/log/pods/.../<n>.log)."""
    return pod_root / "logs" / container / f"{attempt}.log"


class PodWorker(threading.Thread):
    def __init__(self, kubelet: ProcessKubelet, pod: dict[str, Any], ip: str) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.ip = ip
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.root = pod_dir(kubelet.workdir, meta["namespace"], meta["name"], self.uid)
        self.netns = f"sobert-{self.uid[:12]}"
        self.hosts = self.root / "etc-hosts"
        self.resolv = self.root / "etc-resolv.conf"
        self.inits = [ContainerState(c, True) for c in pod["spec"].get("initContainers") or []]
        self.mains = [ContainerState(c, False) for c in pod["spec"]["containers"]]
        self.start_time = now()
        self.network_ready = False
        self.volume_binds: dict[str, tuple[str, bool]] = {}
        self.phase = "Pending"
        self.gone = threading.Event()  # the pod object was deleted outright
        self.last_status: str | None = None
        self.proxy: Any = None
        self.tmpfs: list[Path] = []  # memory-backed emptyDirs mounted for this pod

    # --- sandbox ------------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return self.pod["spec"].get("hostname") or self.pod["metadata"]["name"]

    def write_hosts(self, records: dict[str, list[tuple[str, str]]]) -> None:
        if self.root.exists():
            own = self.hostname
            subdomain = self.pod["spec"].get("subdomain")
            namespace = self.pod["metadata"]["namespace"]
            if subdomain:
                own = f"{own}.{subdomain}.{namespace}.svc.{dns.DOMAIN} {own}"
            dns.write_in_place(self.hosts, dns.hosts_file(records, namespace, (own, self.ip)))
            dns.write_in_place(self.resolv, dns.resolv_conf(self.kubelet.gateway, namespace))

    def setup_sandbox(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.hosts.exists():
            self.write_hosts(self.kubelet.records)
        k = self.kubelet
        sandbox.create_pod_network(self.netns, k.bridge, f"{self.ip}/{k.prefix_len}", k.gateway)
        # kube-proxy's part for the `kubernetes` Service: its ClusterIP:443 leads to the API server.
        self.proxy = sandbox.listen_in_pod(self.netns, k.api_cluster_ip, 443)
        threading.Thread(target=sandbox.forward, args=(self.proxy, (k.gateway, k.api_port)), daemon=True).start()
        self.network_ready = True

    def _ref_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        namespace = self.pod["metadata"]["namespace"]
        plural = "configmaps" if kind == "configMap" else "secrets"
        obj = self.kubelet.api.try_get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if obj is None:
            if optional:
                return None
            raise LookupError(f"{kind} {namespace}/{name} not found")
        data = dict(obj.get("data") or {})
        if kind == "secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        else:
            data.update({k: base64.b64decode(v).decode() for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _write_files(self, target: Path, files: dict[str, str], mode: int) -> None:
        gid = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for relative, content in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(mode)
            if gid is not None:
                os.chown(path, -1, gid)

    def _items(self, data: dict[str, str], items: list[dict[str, Any]] | None) -> dict[str, str]:
        if not items:
            return dict(data)
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    def _token(self, source: dict[str, Any]) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else None,
                "expirationSeconds": source.get("expirationSeconds", 3600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
            },
        }
        account = spec.get("serviceAccountName") or "default"
        result = self.kubelet.api.call(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token", body
        )
        return result["status"]["token"]

    def setup_volumes(self) -> None:
        """Materialise every volume under the pod's directory (configMap, secret, emptyDir,
        downwardAPI, projected, hostPath); raises LookupError while a source is missing."""
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            target = self.root / "volumes" / name
            readonly = False
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                if volume["emptyDir"].get("medium") == "Memory" and not os.path.ismount(target):
                    # A tmpfs, limited to sizeLimit (pkg/volume/emptydir: setupTmpfs).
                    limit = volume["emptyDir"].get("sizeLimit")
                    options = f"size={int(_quantity(str(limit)))}" if limit else "size=50%"
                    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
                    self.tmpfs.append(target)
                target.chmod(0o777)
            elif "configMap" in volume or "secret" in volume:
                kind = "configMap" if "configMap" in volume else "secret"
                source = volume[kind]
                ref = source.get("name") or source.get("secretName")
                data = self._ref_data(kind, ref, bool(source.get("optional")))
                target.mkdir(parents=True, exist_ok=True)
                self._write_files(
                    target, self._items(data or {}, source.get("items")), source.get("defaultMode", 0o644)
                )
                readonly = True
            elif "downwardAPI" in volume:
                fields = {
                    i["path"]: _field(self.pod, i["fieldRef"]["fieldPath"]) for i in volume["downwardAPI"]["items"]
                }
                target.mkdir(parents=True, exist_ok=True)
                self._write_files(target, fields, volume["downwardAPI"].get("defaultMode", 0o644))
                readonly = True
            elif "projected" in volume:
                files: dict[str, str] = {}
                for source in volume["projected"]["sources"]:
                    if "serviceAccountToken" in source:
                        files[source["serviceAccountToken"]["path"]] = self._token(source["serviceAccountToken"])
                    elif "configMap" in source or "secret" in source:
                        kind = "configMap" if "configMap" in source else "secret"
                        ref = source[kind]
                        data = self._ref_data(kind, ref["name"], bool(ref.get("optional")))
                        files.update(self._items(data or {}, ref.get("items")))
                    elif "downwardAPI" in source:
                        for item in source["downwardAPI"]["items"]:
                            files[item["path"]] = _field(self.pod, item["fieldRef"]["fieldPath"])
                target.mkdir(parents=True, exist_ok=True)
                self._write_files(target, files, volume["projected"].get("defaultMode", 0o644))
                readonly = True
            elif "hostPath" in volume:
                target = Path(volume["hostPath"]["path"])
            else:
                raise ValueError(f"volume {name}: type not supported by the process kubelet: {sorted(volume)}")
            self.volume_binds[name] = (str(target), readonly)

    # --- containers ---------------------------------------------------------------------------

    def environment(self, spec: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
        """makeEnvironmentVariables: `base` (an emulated image's ENV), the `kubernetes` Service's
        variables, then envFrom and env in order, each value `$(VAR)`-expanded against what came
        before."""
        k = self.kubelet
        env = dict(base)
        env["HOSTNAME"] = self.hostname
        # Service links for `kubernetes.default`, which every pod gets.
        ip = k.api_cluster_ip
        env.update(
            {
                "KUBERNETES_SERVICE_HOST": ip,
                "KUBERNETES_SERVICE_PORT": "443",
                "KUBERNETES_SERVICE_PORT_HTTPS": "443",
                "KUBERNETES_PORT": f"tcp://{ip}:443",
                "KUBERNETES_PORT_443_TCP": f"tcp://{ip}:443",
                "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                "KUBERNETES_PORT_443_TCP_PORT": "443",
                "KUBERNETES_PORT_443_TCP_ADDR": ip,
            }
        )
        declared: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            kind = "configMap" if "configMapRef" in source else "secret"
            ref = source["configMapRef" if kind == "configMap" else "secretRef"]
            data = self._ref_data(kind, ref["name"], bool(ref.get("optional"))) or {}
            declared.update({source.get("prefix", "") + key: value for key, value in data.items()})
        for item in spec.get("env") or []:
            if "valueFrom" not in item:
                declared[item["name"]] = expand(item.get("value", ""), {**env, **declared})
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                declared[item["name"]] = _field(self.pod, source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                section, resource = ref["resource"].split(".", 1)
                value = ((spec.get("resources") or {}).get(section) or {}).get(resource) or k.capacity[resource]
                divisor = _quantity(str(ref.get("divisor", "1")))
                declared[item["name"]] = str(int(-(-_quantity(str(value)) // divisor)))
            else:
                kind = "configMap" if "configMapKeyRef" in source else "secret"
                ref = source["configMapKeyRef" if kind == "configMap" else "secretKeyRef"]
                found = self._ref_data(kind, ref["name"], bool(ref.get("optional")))
                if found is None or ref["key"] not in found:
                    if ref.get("optional"):
                        continue
                    raise LookupError(f"{kind} {ref['name']} has no key {ref['key']}")
                declared[item["name"]] = found[ref["key"]]
        env.update(declared)
        return env

    def launch(self, container: ContainerState) -> None:
        """Start the container: from its image under runc where the image is in this node's
        store, else emulated from this checkout (`sandbox.IMAGES`)."""
        config = images.image_config(container.spec["image"])
        if config is not None:
            self.launch_from_image(container, oci.ImageConfig.from_oci(config))
        else:
            self.launch_emulated(container)
        if "readinessProbe" in container.spec and not container.init:
            container.probe_ok = False
            threading.Thread(target=self.probe_readiness, args=(container, container.handle), daemon=True).start()

    def mounts(self, spec: dict[str, Any]) -> list[tuple[str, str, bool]]:
        """(target, source, read-only) of the container's volumes, /etc/hosts and /etc/resolv.conf."""
        binds = [("/etc/hosts", str(self.hosts), False), ("/etc/resolv.conf", str(self.resolv), True)]
        for mount in spec.get("volumeMounts") or []:
            source, readonly = self.volume_binds[mount["name"]]
            if mount.get("subPath"):
                source = str(Path(source) / mount["subPath"])
            binds.append((mount["mountPath"], source, readonly or bool(mount.get("readOnly"))))
        return binds

    def launch_from_image(self, container: ContainerState, config: oci.ImageConfig) -> None:
        """The container from its image's root filesystem under runc (`oci.py`), image config and
        pod spec combined as containerd's CRI plugin combines them."""
        spec, image = container.spec, container.spec["image"]
        env = self.environment(spec, {})  # the image's ENV comes under it in `oci.process_env`
        runtime_id = f"{self.kubelet.runtime_prefix}-{self.uid[:8]}-{container.name}-{container.restart_count}"
        request = image_container(
            self.pod,
            spec,
            env,
            self.mounts(spec),
            hostname=self.hostname,
            network_namespace=f"/var/run/netns/{self.netns}",
            cgroups_path=f"/sobert-testbed/{self.uid}/{container.name}",
        )
        rootfs = images.create_root_filesystem(image, runtime_id)  # LookupError: not in the store
        try:
            runtime = oci.runtime_spec(rootfs, config, request)
            user = runtime["process"]["user"]
            if _security(self.pod, spec).get("runAsNonRoot") and user["uid"] == 0:
                raise PermissionError("container has runAsNonRoot and image will run as root")
            runc = oci.RuncContainer(runtime_id, runtime, request, self.root / "bundles" / runtime_id,
                                     self.log_path(container.name, container.restart_count))  # fmt: skip
            container.handle = runc.start()
        except BaseException:
            images.remove_root_filesystem(runtime_id)
            raise
        container.runc = runc
        container.started_at, container.terminated, container.waiting = now(), None, None
        process = runtime["process"]
        environment = dict(entry.split("=", 1) for entry in process["env"])
        container.exec_context = (user["uid"], user["gid"], environment, process["cwd"])
        log.info(
            "%s: started container %s from %s (runc %s): %s",
            self.key,
            container.name,
            image,
            runtime_id,
            process["args"],
        )

    def launch_emulated(self, container: ContainerState) -> None:
        spec = container.spec
        layout = sandbox.image_layout(spec["image"])
        env = self.environment(spec, layout.env)
        if spec.get("command"):
            command = list(spec["command"]) + list(spec.get("args") or [])
        else:
            command = layout.entrypoint + list(spec.get("args") or layout.cmd)
        command = [expand(part, env) for part in command]
        security = _security(self.pod, spec)
        uid = int(security.get("runAsUser", layout.user))
        gid = int(security.get("runAsGroup", uid if uid else 0))
        groups = sorted({gid, *_additional_groups(self.pod)})
        if security.get("runAsNonRoot") and uid == 0:
            raise PermissionError("container has runAsNonRoot and would run as root")
        container_root = self.root / "containers" / container.name
        binds = sandbox.container_binds(layout, container_root) + self.mounts(spec)
        log_path = self.log_path(container.name, container.restart_count)
        container.handle = sandbox.start_container(
            netns=self.netns,
            hostname=self.hostname,
            command=command,
            env=env,
            workdir=spec.get("workingDir") or layout.workdir,
            uid=uid,
            gid=gid,
            groups=groups,
            binds=binds,
            log=log_path,
        )
        container.started_at = now()
        container.terminated = None
        container.waiting = None
        container.exec_context = (uid, gid, env, spec.get("workingDir") or layout.workdir)
        log.info("%s: started container %s (pid %d): %s", self.key, container.name, container.handle.pid, command)

    def probe_once(self, container: ContainerState, probe: dict[str, Any]) -> bool:
        """One readiness check, as prober.go runs it: exec inside the container's namespaces as
        its user with its environment, or an HTTP GET / TCP connect to the pod IP from the node."""
        import socket
        import urllib.request

        timeout = float(probe.get("timeoutSeconds", 1))
        if "exec" in probe:
            pid = self.pid1(container)
            if pid is None or container.exec_context is None:
                return False
            command = exec_command(pid, *container.exec_context, probe["exec"]["command"])
            try:
                return subprocess.run(command, capture_output=True, timeout=timeout + 5).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container.spec.get("ports") or [] if p.get("name") == port)
        if "httpGet" in probe:
            url = f"http://{self.ip}:{port}{probe['httpGet'].get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            except OSError:
                return False
        if "tcpSocket" in probe:
            try:
                socket.create_connection((self.ip, port), timeout=timeout).close()
                return True
            except OSError:
                return False
        return True

    def probe_readiness(self, container: ContainerState, handle: subprocess.Popen) -> None:
        """The readiness prober of one container run (stops when it ends)."""
        probe = container.spec["readinessProbe"]
        time.sleep(float(probe.get("initialDelaySeconds", 0)))
        successes = failures = 0
        while container.handle is handle and container.terminated is None and not self.gone.is_set():
            if self.probe_once(container, probe):
                successes, failures = successes + 1, 0
                if successes >= int(probe.get("successThreshold", 1)):
                    container.probe_ok = True
            else:
                successes, failures = 0, failures + 1
                if failures >= int(probe.get("failureThreshold", 3)):
                    container.probe_ok = False
            time.sleep(float(probe.get("periodSeconds", 10)))

    def log_path(self, container: str, attempt: int) -> Path:
        return container_log(self.root, container, attempt)

    def reap(self, container: ContainerState) -> bool:
        """Record the container's end if its process exited; True when it did."""
        handle = container.handle
        if handle is None or container.terminated is not None:
            return False
        code = handle.poll()
        if code is None:
            return False
        exit_code = code if code >= 0 else 128 - code
        oom_killed = False
        if container.runc is not None:
            oom_killed = container.runc.finish()
            images.remove_root_filesystem(container.runc.id)
        container.terminated = {
            "exitCode": exit_code,
            "reason": "OOMKilled" if oom_killed else "Completed" if exit_code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now(),
            "containerID": container.container_id(),
        }
        log.info("%s: container %s exited %d", self.key, container.name, exit_code)
        return True

    def pid1(self, container: ContainerState) -> int | None:
        """The container's init as seen from the node."""
        if container.runc is not None:
            return container.runc.pid1()
        return sandbox.container_pid1(container.handle) if container.handle else None

    def signal(self, container: ContainerState, sig: int) -> None:
        if container.handle is None or container.terminated is not None:
            return
        if container.runc is not None:
            container.runc.kill(sig)  # the runtime signals the container's init
            return
        target = sandbox.container_pid1(container.handle) if sig != signal.SIGKILL else None
        try:
            if target:
                os.kill(target, sig)
            else:
                os.killpg(container.handle.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- status -------------------------------------------------------------------------------

    def pod_phase(self) -> str:
        """getPhase in kubelet_pods.go."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if any(c.terminated and c.terminated["exitCode"] != 0 for c in self.inits) and policy == "Never":
            return "Failed"
        if not all(c.terminated and c.terminated["exitCode"] == 0 for c in self.inits):
            return "Pending"
        if any(c.handle is not None and c.terminated is None for c in self.mains):
            return "Running"
        if any(c.handle is None for c in self.mains):
            return "Pending"
        if any(c.waiting for c in self.mains):  # waiting to restart
            return "Running"
        if all(c.terminated and c.terminated["exitCode"] == 0 for c in self.mains):
            return "Succeeded"
        return "Failed"

    def status(self) -> dict[str, Any]:
        k = self.kubelet
        phase = self.pod_phase()
        initialized = all(c.terminated and c.terminated["exitCode"] == 0 for c in self.inits)
        ready = phase == "Running" and all(
            c.handle is not None and c.terminated is None and c.probe_ok for c in self.mains
        )
        stamp = now()

        def condition(kind: str, value: bool, reason: str | None = None) -> dict[str, Any]:
            item = {"type": kind, "status": "True" if value else "False", "lastTransitionTime": stamp}
            if reason and not value:
                item["reason"] = reason
            return item

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": k.gateway,
            "hostIPs": [{"ip": k.gateway}],
            "startTime": self.start_time,
            "conditions": [
                condition("PodReadyToStartContainers", self.network_ready),
                condition("Initialized", initialized, "ContainersNotInitialized"),
                condition("ContainersReady", ready, "ContainersNotReady"),
                condition("Ready", ready, "ContainersNotReady"),
            ],
            "containerStatuses": [c.status(f"sobert-testbed://{c.spec['image']}") for c in self.mains],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.status(f"sobert-testbed://{c.spec['image']}") for c in self.inits]
        if self.network_ready:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    def push_status(self, force: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException

        status = self.status()
        # Only transitions move lastTransitionTime: keep the times of unchanged conditions.
        previous = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        for item in status["conditions"]:
            old = previous.get(item["type"])
            if old and old.get("status") == item["status"]:
                item["lastTransitionTime"] = old.get("lastTransitionTime", item["lastTransitionTime"])
        fingerprint = json.dumps(status, sort_keys=True)
        if fingerprint == self.last_status and not force:
            return
        meta = self.pod["metadata"]
        try:
            self.pod = self.kubelet.api.call(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"metadata": {"uid": self.uid}, "status": status},
                "application/strategic-merge-patch+json",
            )
            self.last_status = fingerprint
        except ApiException as exc:
            if exc.status in (404, 409):
                return
            log.warning("%s: status update failed: %s", self.key, exc.reason)

    # --- lifecycle ----------------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        if pod["metadata"]["uid"] == self.uid:
            self.pod = pod

    def deleting(self) -> bool:
        return self.gone.is_set() or bool(self.pod["metadata"].get("deletionTimestamp"))

    def run(self) -> None:
        try:
            self.lifecycle()
        except Exception:
            log.exception("%s: pod worker failed", self.key)
        finally:
            self.kill_all()
            if self.proxy is not None:
                self.proxy.close()
            sandbox.delete_pod_network(self.netns)
            self.kubelet.forget(self.uid)

    def kill_all(self) -> None:
        """SIGKILL every container; those under runc are reaped (their root filesystems and
        cgroups removed); the pod's memory-backed volumes are unmounted."""
        for container in self.inits + self.mains:
            self.signal(container, signal.SIGKILL)
            if container.runc is not None and container.handle is not None:
                container.handle.wait(timeout=30)
                self.reap(container)
        oci.remove_cgroup(f"/sobert-testbed/{self.uid}")
        for target in self.tmpfs:
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True)

    def lifecycle(self) -> None:
        if (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.wait_for_deletion()
            return
        self.push_status(force=True)
        while not self.deleting():
            try:
                self.setup_volumes()
                self.setup_sandbox()
                break
            except (LookupError, ValueError) as exc:
                for container in self.inits + self.mains:
                    container.waiting = ("CreateContainerConfigError", str(exc))
                self.push_status()
                time.sleep(1.0)
        self.push_status()
        policy = self.pod["spec"].get("restartPolicy", "Always")
        self.run_init_containers(policy)
        if not self.deleting() and self.pod_phase() != "Failed":
            for container in self.mains:
                self.try_start(container)
        while not self.deleting():
            for container in self.mains:
                if self.reap(container):
                    code = container.terminated["exitCode"] if container.terminated else 0
                    if policy == "Always" or (policy == "OnFailure" and code != 0):
                        self.backoff(container)
                elif (
                    container.waiting  # to restart, or to start again after a start that failed
                    and (container.terminated or container.handle is None)
                    and time.monotonic() >= container.next_start
                ):
                    self.try_start(container)
            self.push_status()
            if self.pod_phase() in ("Succeeded", "Failed"):
                break
            time.sleep(0.2)
        if self.deleting():
            self.terminate()
        self.push_status()
        self.wait_for_deletion()

    def run_init_containers(self, policy: str) -> None:
        """Each init container in order, to success (kubelet's computeInitContainerActions): a
        failed one is restarted after its back-off unless the pod's policy is Never, which fails
        the pod; a failed start is tried again after its back-off."""
        for container in self.inits:
            while not self.deleting():
                if container.handle is None or (container.terminated and container.terminated["exitCode"] != 0):
                    if container.terminated and policy == "Never":
                        break
                    if time.monotonic() < container.next_start:
                        time.sleep(0.2)
                        continue
                    if container.terminated:
                        self.backoff(container)
                        continue
                    if not self.try_start(container):
                        continue  # again after its back-off
                    self.push_status()
                if container.terminated and container.terminated["exitCode"] == 0:
                    break
                self.reap(container)
                self.push_status()
                time.sleep(0.2)
            if self.pod_phase() == "Failed" or self.deleting():
                break

    def try_start(self, container: ContainerState) -> bool:
        try:
            if container.terminated:
                container.last_terminated = container.terminated
                container.restart_count += 1
            self.launch(container)
            return True
        except (LookupError, ValueError, PermissionError, OSError) as exc:
            # Retried after a back-off, as the kubelet's pod workers retry a failed start. An image
            # not in the store is a failed pull: ErrImagePull, then ImagePullBackOff until the next
            # try (pkg/kubelet/images/image_manager.go, EnsureImageExists; 10 s doubling to 5 min).
            missing_image = isinstance(exc, LookupError) and "image" in str(exc)
            container.waiting = ("ErrImagePull" if missing_image else "CreateContainerError", str(exc))
            log.warning("%s: container %s: %s", self.key, container.name, exc)
            self.push_status()
            container.start_failures += 1
            container.next_start = time.monotonic() + _backoff_seconds(container.start_failures - 1)
            if missing_image:
                container.waiting = ("ImagePullBackOff", f'Back-off pulling image "{container.spec["image"]}"')
            return False

    def backoff(self, container: ContainerState) -> None:
        """CrashLoopBackOff after the container's `restart_count` restarts."""
        delay = _backoff_seconds(container.restart_count)
        container.waiting = ("CrashLoopBackOff", f"back-off {delay}s restarting failed container")
        container.next_start = time.monotonic() + delay

    def terminate(self) -> None:
        """killContainer: SIGTERM to each container's PID 1, SIGKILL after the grace period."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        running = [c for c in self.inits + self.mains if c.handle is not None and c.terminated is None]
        if running:
            log.info("%s: stopping %d container(s), grace %ss", self.key, len(running), grace)
        for container in running:
            self.signal(container, signal.SIGTERM)
        deadline = time.monotonic() + float(grace)
        while time.monotonic() < deadline and any(c.terminated is None for c in running):
            for container in running:
                self.reap(container)
            time.sleep(0.1)
        for container in running:
            if container.terminated is None:
                self.signal(container, signal.SIGKILL)
                container.handle.wait(timeout=30)  # type: ignore[union-attr]
                self.reap(container)

    def wait_for_deletion(self) -> None:
        """A finished pod stays until it is deleted; then its final delete (grace 0)."""
        from kubernetes.client.exceptions import ApiException

        while not self.gone.is_set():
            if self.pod["metadata"].get("deletionTimestamp"):
                self.terminate()
                meta = self.pod["metadata"]
                try:
                    self.kubelet.api.call(
                        "DELETE",
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                        {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                    )
                except ApiException as exc:
                    if exc.status not in (404, 409):
                        raise
                return
            time.sleep(0.3)


# --------------------------------------------------------------------------------------------
# The node


class ProcessKubelet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api = Api(args.kubeconfig)
        self.node: str = args.node
        self.workdir = Path(args.workdir)
        self.bridge: str = args.bridge
        self.gateway: str = args.gateway
        self.prefix_len: int = args.prefix_len
        self.pod_subnet: str = args.pod_subnet  # "10.B.N." : this node's /24
        self.api_port: int = args.api_port
        self.api_cluster_ip: str = args.api_cluster_ip
        self.log_port: int = args.log_port
        self.labels: dict[str, str] = dict(item.split("=", 1) for item in args.label)
        # Names this node's runc containers and their root filesystems (unique per cluster).
        self.runtime_prefix = f"{args.bridge}-{args.node}"
        self.capacity = {"cpu": args.cpu, "memory": args.memory, "pods": "110", "ephemeral-storage": "100Gi"}
        if args.gpus:
            self.capacity["nvidia.com/gpu"] = str(args.gpus)
        self.workers: dict[str, PodWorker] = {}
        self.used_ips: set[str] = set()
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.lock = threading.Lock()

    # --- node ---------------------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        stamp = now()
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "addresses": [{"type": "InternalIP", "address": self.gateway}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "sobert testbed (processes)",
                "containerRuntimeVersion": "sobert-process://1",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "process kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
        }

    def register(self) -> None:
        from kubernetes.client.exceptions import ApiException

        labels = {
            "kubernetes.io/hostname": self.node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **self.labels,
        }
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}}
        try:
            self.api.call("POST", "/api/v1/nodes", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.node}/status",
            {"status": self.node_status()},
            "application/strategic-merge-patch+json",
        )

    def heartbeat(self) -> None:
        from kubernetes.client.exceptions import ApiException

        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while True:
            try:
                lease = self.api.try_get(path)
                spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now_micro()}
                if lease is None:
                    node = self.api.get(f"/api/v1/nodes/{self.node}")
                    owner = {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node["metadata"]["uid"]}
                    body = {"metadata": {"name": self.node, "ownerReferences": [owner]}, "spec": spec}
                    self.api.call("POST", path.rsplit("/", 1)[0], body)
                else:
                    self.api.call("PATCH", path, {"spec": spec}, "application/merge-patch+json")
                status = self.node_status()
                self.api.call(
                    "PATCH",
                    f"/api/v1/nodes/{self.node}/status",
                    {"status": {"conditions": status["conditions"]}},
                    "application/strategic-merge-patch+json",
                )
            except (ApiException, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
            time.sleep(10)

    # --- pods ---------------------------------------------------------------------------------

    def allocate_ip(self) -> str:
        with self.lock:
            for host in range(2, 255):
                ip = f"{self.pod_subnet}{host}"
                if ip not in self.used_ips:
                    self.used_ips.add(ip)
                    return ip
        raise RuntimeError("node out of pod IPs")

    def forget(self, uid: str) -> None:
        with self.lock:
            worker = self.workers.get(uid)
            if worker is not None and worker.gone.is_set():
                self.workers.pop(uid, None)
                self.used_ips.discard(worker.ip)

    def sync(self) -> None:
        """The pod workers follow the pods bound to this node (a 0.3 s poll stands in for the watch)."""
        selector = urllib.parse.quote(f"spec.nodeName={self.node}")
        while True:
            try:
                pods = self.api.get(f"/api/v1/pods?fieldSelector={selector}")["items"]
            except Exception as exc:
                log.warning("listing pods failed: %s", exc)
                time.sleep(1)
                continue
            seen = set()
            for pod in pods:
                uid = pod["metadata"]["uid"]
                seen.add(uid)
                with self.lock:
                    worker = self.workers.get(uid)
                if worker is None:
                    worker = PodWorker(self, pod, self.allocate_ip())
                    with self.lock:
                        self.workers[uid] = worker
                    worker.start()
                else:
                    worker.update(pod)
            with self.lock:
                vanished = [w for uid, w in self.workers.items() if uid not in seen]
            for worker in vanished:
                worker.gone.set()
                for container in worker.inits + worker.mains:
                    worker.signal(container, signal.SIGKILL)
                self.forget(worker.uid)
            time.sleep(0.3)

    def dns(self) -> None:
        """Keep every pod's /etc/hosts current (see dns.py)."""
        while True:
            try:
                pods = self.api.get("/api/v1/pods")["items"]
                services = self.api.get("/api/v1/services")["items"]
                self.records = dns.cluster_records(pods, services)
                with self.lock:
                    workers = list(self.workers.values())
                for worker in workers:
                    worker.write_hosts(self.records)
                dns.write_in_place(self.workdir / "hosts", dns.hosts_file(self.records, None))
            except Exception as exc:
                log.warning("dns refresh failed: %s", exc)
            time.sleep(0.5)

    # --- logs ---------------------------------------------------------------------------------

    def find_log(self, namespace: str, pod: str, container: str, previous: bool) -> tuple[Path, PodWorker] | None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            meta = worker.pod["metadata"]
            if meta["namespace"] == namespace and meta["name"] == pod:
                for state in worker.inits + worker.mains:
                    if state.name == container:
                        attempt = state.restart_count - (1 if previous else 0)
                        return worker.log_path(container, max(attempt, 0)), worker
        return None

    def serve_logs(self, cert: str, key: str) -> None:
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                parts = url.path.strip("/").split("/")
                query = urllib.parse.parse_qs(url.query)
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404)
                    return
                found = kubelet.find_log(parts[1], parts[2], parts[3], query.get("previous", ["false"])[0] == "true")
                if found is None or not found[0].exists():
                    self.send_error(404, "container not found")
                    return
                path, worker = found
                data = path.read_bytes()
                if "tailLines" in query:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else b""
                if "limitBytes" in query:
                    data = data[: int(query["limitBytes"][0])]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(data)
                if query.get("follow", ["false"])[0] != "true":
                    return
                offset = path.stat().st_size
                while True:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                    if chunk:
                        offset += len(chunk)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    state = next(c for c in worker.inits + worker.mains if c.name == parts[3])
                    if state.terminated is not None or worker.gone.is_set():
                        return
                    time.sleep(0.3)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        server = Server((self.gateway, self.log_port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--bridge", required=True)
    parser.add_argument("--gateway", required=True, help="the host's address on the bridge")
    parser.add_argument("--prefix-len", type=int, default=16)
    parser.add_argument("--pod-subnet", required=True, help='e.g. "10.201.1." (this node\'s pod IPs)')
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--api-cluster-ip", default="10.96.0.1", help="the `kubernetes` Service's ClusterIP")
    parser.add_argument("--log-port", type=int, required=True)
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--cpu", default="32")
    parser.add_argument("--memory", default="256Gi")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--serve-dns", action="store_true", help="answer the cluster's DNS at the gateway, port 53")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    kubelet = ProcessKubelet(args)
    kubelet.register()
    for target in (kubelet.heartbeat, kubelet.dns, kubelet.sync):
        threading.Thread(target=target, daemon=True, name=target.__name__).start()
    if args.serve_dns:
        threading.Thread(target=dns.serve, args=(args.gateway, lambda: kubelet.records), daemon=True).start()
    threading.Thread(target=kubelet.serve_logs, args=(args.tls_cert, args.tls_key), daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    with kubelet.lock:
        workers = list(kubelet.workers.values())
    for worker in workers:
        worker.gone.set()
        worker.kill_all()
        sandbox.delete_pod_network(worker.netns)
    images.sweep(kubelet.runtime_prefix)
    shutil.rmtree(kubelet.workdir / "pods" / "_", ignore_errors=True)


def exec_command(pid: int, uid: int, gid: int, env: dict[str, str], workdir: str, command: list[str]) -> list[str]:
    """`command` run inside the namespaces of process `pid` (a container's init) as `uid`:`gid`
    with exactly `env`, in `workdir` as the container sees it: what the CRI's ExecSync does for an
    exec probe. `--wdns`, not `--wd`: nsenter opens a `--wd` directory before it enters the mount
    namespace, so a workdir that exists only in the image (/home/sobert) failed every probe."""
    return [
        "nsenter", "-t", str(pid), "-m", "-u", "-n", "-p", f"--wdns={workdir}", "-S", str(uid), "-G", str(gid),
        "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *command,
    ]  # fmt: skip


if __name__ == "__main__":
    main()
