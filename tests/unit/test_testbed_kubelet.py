"""The testbed's emulated pieces, checked against what the real ones do: cluster DNS records and
replies (CoreDNS `kubernetes` plugin), `$(VAR)` expansion (kubelet), the kubelet's pod phase."""

from __future__ import annotations

import socket
import struct
import threading
import time

from sobert_testbed import dns, kubelet

POD = {
    "metadata": {"name": "job-master-0", "namespace": "ns", "labels": {"job": "j", "role": "master"}},
    "spec": {"hostname": "job-master-0", "subdomain": "job"},
    "status": {"phase": "Running", "podIP": "10.9.1.2", "conditions": [{"type": "Ready", "status": "True"}]},
}
PENDING = {
    "metadata": {"name": "job-worker-0", "namespace": "ns", "labels": {"job": "j", "role": "worker"}},
    "spec": {},
    "status": {"phase": "Pending", "podIP": "10.9.1.3", "conditions": []},
}


def service(name, selector, cluster_ip="None", namespace="ns", not_ready=False):
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "clusterIP": cluster_ip, "publishNotReadyAddresses": not_ready},
    }


def test_records_follow_selectors_readiness_and_pod_subdomains():
    services = [
        service("job", {"job": "j"}),
        service("job-worker-0", {"role": "worker"}),
        service("job-worker-any", {"role": "worker"}, not_ready=True),
        service("kubernetes", {}, "10.96.0.1", namespace="default"),
    ]
    records = dns.cluster_records([POD, PENDING], services)
    assert sorted(records["ns"]) == sorted(
        [
            ("job.ns.svc.cluster.local", "10.9.1.2"),
            ("job-master-0.job.ns.svc.cluster.local", "10.9.1.2"),  # hostname.subdomain of a headless Service
            ("job-worker-any.ns.svc.cluster.local", "10.9.1.3"),  # not ready, but published
        ]
    )
    assert records["default"] == [("kubernetes.default.svc.cluster.local", "10.96.0.1")]


def test_hosts_file_gives_search_path_forms_only_in_the_pods_namespace():
    records = {"ns": [("job.ns.svc.cluster.local", "10.9.1.2")]}
    inside = dns.hosts_file(records, "ns", ("me", "10.9.1.9"))
    assert "10.9.1.9\tme" in inside
    assert "10.9.1.2\tjob.ns.svc.cluster.local job.ns.svc job.ns job\n" in inside
    outside = dns.hosts_file(records, None)
    assert "10.9.1.2\tjob.ns.svc.cluster.local job.ns.svc job.ns\n" in outside


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def test_dns_server_answers_a_records_nodata_and_nxdomain_over_udp():
    records = {"ns": [("job.ns.svc.cluster.local", "10.9.1.2"), ("job.ns.svc.cluster.local", "10.9.1.3")]}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = threading.Thread(target=dns.serve, args=("127.0.0.1", lambda: records, port), daemon=True)
    server.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)

    def ask(name: str, qtype: int = 1) -> tuple[int, list[str]]:
        for _ in range(20):
            client.sendto(_query(name, qtype), ("127.0.0.1", port))
            try:
                reply = client.recv(512)
                break
            except TimeoutError:
                time.sleep(0.1)
        ident, flags, _, ancount = struct.unpack("!HHHH", reply[:8])
        assert ident == 0x1234 and flags & 0x8000
        answers = reply[len(_query(name, qtype)) :]
        ips = [".".join(str(b) for b in answers[i * 16 + 12 : i * 16 + 16]) for i in range(ancount)]
        return flags & 0xF, ips

    assert ask("job.ns.svc.cluster.local") == (0, ["10.9.1.2", "10.9.1.3"])
    assert ask("JOB.ns.svc.cluster.local") == (0, ["10.9.1.2", "10.9.1.3"])  # names are case-insensitive
    assert ask("job.ns.svc.cluster.local", qtype=28) == (0, [])  # AAAA of a known name: NODATA
    assert ask("ns.svc.cluster.local") == (0, [])  # an interior name exists
    assert ask("job.ns.svc.cluster.local.ns.svc.cluster.local") == (3, [])  # a search-path miss: NXDOMAIN
    assert dns.resolv_conf("10.9.0.1", "ns").splitlines() == [
        "search ns.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.9.0.1",
        "options ndots:5",
    ]


def test_variable_expansion_matches_kubernetes():
    env = {"POD_NAMESPACE": "sobert", "A": "x"}
    assert kubelet.expand("--namespace=$(POD_NAMESPACE)", env) == "--namespace=sobert"
    assert kubelet.expand("$(MISSING)-$(A)", env) == "$(MISSING)-x"  # undefined: left as written
    assert kubelet.expand("$$(A) costs $$5", env) == "$(A) costs $5"  # $$ escapes


def test_field_refs_and_unsupported_paths():
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"ray.io/group": "g"}},
        "spec": {"nodeName": "node-0", "serviceAccountName": "sa"},
        "status": {"podIP": "10.0.0.2", "hostIP": "10.0.0.1"},
    }
    assert kubelet._field(pod, "metadata.labels['ray.io/group']") == "g"
    assert kubelet._field(pod, "status.podIP") == "10.0.0.2"
    try:
        kubelet._field(pod, "spec.containers")
    except ValueError as exc:
        assert "not supported" in str(exc)
    else:
        raise AssertionError("an unsupported fieldRef must fail the pod, not resolve to nothing")


def test_what_the_kubelet_asks_the_runtime_for():
    """generateContainerConfig: `$(VAR)` in command/args, the container's securityContext over
    the pod's, fsGroup and supplementalGroups as additional groups, the memory limit in bytes."""
    pod = {
        "spec": {
            "securityContext": {"runAsUser": 10001, "runAsNonRoot": True, "fsGroup": 10001, "supplementalGroups": [5]}
        }
    }
    spec = {
        "name": "controller",
        "image": "ghcr.io/sobert-dev/sobert-controller:0.1.0",
        "args": ["--namespace=$(POD_NAMESPACE)", "$$(literal)"],
        "resources": {"limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsGroup": 3000,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    request = kubelet.image_container(
        pod, spec, {"POD_NAMESPACE": "sobert"}, [("/tmp", "/node/pods/x/volumes/tmp", False)],
        hostname="h" * 70, network_namespace="/var/run/netns/p", cgroups_path="/sobert-testbed/uid/controller",
    )  # fmt: skip
    assert request.command == () and request.args == ("--namespace=sobert", "$(literal)")
    assert (request.run_as_user, request.run_as_group, request.supplemental_groups) == (10001, 3000, (5, 10001))
    assert request.read_only_root and request.allow_privilege_escalation is False
    assert request.capabilities_drop == ("ALL",) and request.memory_limit_bytes == 256 * 2**20
    assert request.mounts[0].target == "/tmp" and not request.mounts[0].read_only
    assert len(request.hostname) == 63
    unlimited = kubelet.image_container(
        {"spec": {}}, {"name": "c", "image": "i"}, {}, [], hostname="h", network_namespace="n", cgroups_path="c"
    )
    assert unlimited.memory_limit_bytes is None and unlimited.allow_privilege_escalation is None
    assert unlimited.seccomp is None


def test_the_containers_seccomp_profile_over_the_pods():
    """kubelet's getSeccompProfile (pkg/kubelet/kuberuntime/helpers.go): the container's
    seccompProfile, else the pod's, else none (unconfined; the kubelet's --seccomp-default is off)."""
    pod = {"spec": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}}
    container = {"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}
    args = ({}, [])
    where = {"hostname": "h", "network_namespace": "n", "cgroups_path": "c"}
    assert kubelet.image_container(pod, {"name": "c", "image": "i"}, *args, **where).seccomp == "RuntimeDefault"
    assert kubelet.image_container(pod, container, *args, **where).seccomp == "Unconfined"
    assert kubelet.image_container({"spec": {}}, {"name": "c", "image": "i"}, *args, **where).seccomp is None
