"""Cluster DNS as /etc/hosts files: the names CoreDNS's `kubernetes` plugin would answer.

There is no DNS server and no kube-proxy on the testbed. Instead each pod's /etc/hosts (and the
one the operators on the host see) lists the names a pod in that namespace could resolve, kept
current while pods and Services come and go (glibc reads /etc/hosts on every lookup):
- a Service `s` in namespace `n`: `s.n.svc.cluster.local` and, from `n`, the search-path forms
  `s`, `s.n`, `s.n.svc` -> the IPs of the pods its selector matches (ready pods, or every pod with
  an IP when `publishNotReadyAddresses`). For a ClusterIP Service this stands in for kube-proxy:
  the name goes to a pod, not to the virtual IP (so a Service whose port differs from its
  targetPort is not supported, and `resolve` says so).
- a pod with `hostname` and `subdomain` where a headless Service of that name exists:
  `hostname.subdomain.n.svc.cluster.local` (and its search forms) -> the pod's IP.
- the pod's own hostname -> its IP, as the kubelet writes it.
- `kubernetes.default.svc` -> its ClusterIP, which the kubelet proxies to the API server in each
  pod's network namespace (kube-proxy's part for that one Service).
Rules from CoreDNS v1.12 plugin/kubernetes (`records`/`findServices`) and the Kubernetes DNS
specification (cluster-dns.md, "Schema version 1.1.0").
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

DOMAIN = "cluster.local"


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cluster_records(pods: list[dict[str, Any]], services: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """namespace -> [(fully qualified name, ip)] for every Service and pod record."""
    records: dict[str, list[tuple[str, str]]] = defaultdict(list)
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    for service in services:
        meta, spec = service["metadata"], service.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        selector = spec.get("selector") or {}
        not_ready_too = bool(spec.get("publishNotReadyAddresses"))
        headless = spec.get("clusterIP") == "None"
        if (namespace, name) == ("default", "kubernetes"):
            # The one Service with a virtual IP that works here: the kubelet proxies it.
            records[namespace].append((f"{name}.{namespace}.svc.{DOMAIN}", spec["clusterIP"]))
            continue
        for pod in live:
            pmeta, pstatus = pod["metadata"], pod.get("status") or {}
            if pmeta["namespace"] != namespace or not _matches(selector, pmeta.get("labels") or {}):
                continue
            ip = pstatus.get("podIP")
            if not ip or pstatus.get("phase") in ("Succeeded", "Failed"):
                continue
            if not (_ready(pod) or not_ready_too):
                continue
            records[namespace].append((f"{name}.{namespace}.svc.{DOMAIN}", ip))
            pspec = pod.get("spec") or {}
            if headless and pspec.get("subdomain") == name and pspec.get("hostname"):
                records[namespace].append((f"{pspec['hostname']}.{name}.{namespace}.svc.{DOMAIN}", ip))
    return records


def hosts_file(
    records: dict[str, list[tuple[str, str]]], namespace: str | None, own: tuple[str, str] | None = None
) -> str:
    """/etc/hosts for a pod in `namespace` (None: a process outside the cluster: full names only);
    `own` is the pod's (hostname, ip)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if own:
        lines.append(f"{own[1]}\t{own[0]}")
    names: dict[str, list[str]] = defaultdict(list)
    for ns, entries in sorted(records.items()):
        for fqdn, ip in entries:
            base = fqdn[: -len(f".svc.{DOMAIN}")]  # "<name>.<ns>" or "<host>.<sub>.<ns>"
            aliases = [fqdn, f"{base}.svc", base]
            if ns == namespace:
                aliases.append(base[: -len(f".{ns}")])
            if ip not in names[fqdn]:
                names[fqdn].append(ip)
                lines.append(f"{ip}\t{' '.join(aliases)}")
    return "\n".join(lines) + "\n"


def write_in_place(path: Path, text: str) -> bool:
    """Rewrite a bind-mounted file keeping its inode (a rename would leave the mount on the old
    file). Returns whether it changed."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return True


def resolv_conf(nameserver: str, namespace: str) -> str:
    """A ClusterFirst pod's /etc/resolv.conf, as the kubelet writes it (pkg/kubelet/network/dns)."""
    return f"search {namespace}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}\nnameserver {nameserver}\noptions ndots:5\n"


def answer(query: bytes, records: dict[str, list[tuple[str, str]]]) -> bytes | None:
    """The reply to one DNS query (RFC 1035): A records for cluster names, an empty NOERROR for
    other types of a known name, NXDOMAIN for the rest (there is no upstream to forward to)."""
    import struct

    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, offset = [], 12
    while offset < len(query) and query[offset]:
        length = query[offset]
        labels.append(query[offset + 1 : offset + 1 + length].decode(errors="replace").lower())
        offset += 1 + length
    offset += 1
    qtype, _qclass = struct.unpack("!HH", query[offset : offset + 4])
    question = query[12 : offset + 4]
    name = ".".join(labels)
    addresses = [ip for entries in records.values() for fqdn, ip in entries if fqdn == name]
    known = bool(addresses) or any(fqdn.endswith("." + name) for entries in records.values() for fqdn, _ in entries)
    rcode = 0 if known else 3
    answers = (
        [
            struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + bytes(int(part) for part in ip.split("."))
            for ip in dict.fromkeys(addresses)
        ]
        if qtype in (1, 255)
        else []
    )
    header = struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


def serve(address: str, records_of, port: int = 53) -> None:
    """A UDP DNS server at `address`:`port` answering from `records_of()` (what CoreDNS's
    `kubernetes` plugin does for a cluster's pods)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    while True:
        query, client = sock.recvfrom(2048)
        try:
            reply = answer(query, records_of())
        except Exception:
            reply = None
        if reply:
            sock.sendto(reply, client)
