"""The testbed's emulated pieces, checked against what the real ones do: cluster DNS records and
replies (CoreDNS `kubernetes` plugin), `$(VAR)` expansion (kubelet), the kubelet's pod phase."""

from __future__ import annotations

import socket
import struct
import threading
import time

import clusterdns
import prockubelet

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
    records = clusterdns.cluster_records([POD, PENDING], services)
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
    inside = clusterdns.hosts_file(records, "ns", ("me", "10.9.1.9"))
    assert "10.9.1.9\tme" in inside
    assert "10.9.1.2\tjob.ns.svc.cluster.local job.ns.svc job.ns job\n" in inside
    outside = clusterdns.hosts_file(records, None)
    assert "10.9.1.2\tjob.ns.svc.cluster.local job.ns.svc job.ns\n" in outside


def _query(name: str, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def test_dns_server_answers_a_records_nodata_and_nxdomain_over_udp():
    records = {"ns": [("job.ns.svc.cluster.local", "10.9.1.2"), ("job.ns.svc.cluster.local", "10.9.1.3")]}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = threading.Thread(target=clusterdns.serve, args=("127.0.0.1", lambda: records, port), daemon=True)
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
    assert clusterdns.resolv_conf("10.9.0.1", "ns").splitlines() == [
        "search ns.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.9.0.1",
        "options ndots:5",
    ]


def test_variable_expansion_matches_kubernetes():
    env = {"POD_NAMESPACE": "sobert", "A": "x"}
    assert prockubelet.expand("--namespace=$(POD_NAMESPACE)", env) == "--namespace=sobert"
    assert prockubelet.expand("$(MISSING)-$(A)", env) == "$(MISSING)-x"  # undefined: left as written
    assert prockubelet.expand("$$(A) costs $$5", env) == "$(A) costs $5"  # $$ escapes


def test_field_refs_and_unsupported_paths():
    pod = {
        "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"ray.io/group": "g"}},
        "spec": {"nodeName": "node-0", "serviceAccountName": "sa"},
        "status": {"podIP": "10.0.0.2", "hostIP": "10.0.0.1"},
    }
    assert prockubelet._field(pod, "metadata.labels['ray.io/group']") == "g"
    assert prockubelet._field(pod, "status.podIP") == "10.0.0.2"
    try:
        prockubelet._field(pod, "spec.containers")
    except ValueError as exc:
        assert "not supported" in str(exc)
    else:
        raise AssertionError("an unsupported fieldRef must fail the pod, not resolve to nothing")
