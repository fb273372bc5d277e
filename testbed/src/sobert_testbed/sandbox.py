"""A pod's sandbox on this machine: its network namespace on the testbed's bridge, and its
containers as processes in their own mount, PID and UTS namespaces.

What a container runtime (containerd + runc) gives a pod, done with iproute2 and `unshare`:
- **network**: one network namespace per pod (the "pause" container's), a veth pair into it, the
  host end on the testbed's bridge, the pod IP on `eth0` and a default route to the bridge. Pods
  reach each other and the host's bridge address (where the API server and S3 listen) as on a
  flat pod network. No kube-proxy: Service names resolve to pod IPs (see `dns.py`).
- **containers**: `nsenter --net` into the pod's namespace, then `unshare --mount --pid --fork
  --mount-proc --uts`: the command is PID 1 of its own PID namespace, so when it exits every
  process it started dies with it, and a SIGTERM reaches it only if it handles SIGTERM, as in a
  container. Volumes are bind-mounted at their `mountPath`s, `/etc/hosts` is the pod's, `/tmp`
  and `$HOME` are the container's own, and the process runs as the pod's `runAsUser`.
- **images**: no image is pulled. For an image not in the node's store (those that are run under
  runc, see `oci.py`), `IMAGES` maps it to what its root filesystem would provide, taken from
  this checkout (see the table's comments).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

VENV = Path(sys.prefix)  # this checkout's virtualenv: the images' Python environment
CHECKOUT = Path(__file__).resolve().parents[3]  # the repository: its editable installs' sources


@dataclass(frozen=True)
class ImageLayout:
    """What an image's root filesystem and config provide, emulated from this machine."""

    env: dict[str, str]  # the image's ENV
    user: int  # the image's USER
    workdir: str  # the image's WORKDIR
    entrypoint: list[str] = field(default_factory=list)  # ENTRYPOINT
    cmd: list[str] = field(default_factory=list)  # CMD
    python_at: str | None = None  # where the image's Python environment lives: this venv is mounted there
    shims: dict[str, str] = field(default_factory=dict)  # extra executables on /usr/local/bin: name -> shell script
    account: tuple[str, str] | None = None  # the image's user in /etc/passwd: (name, home)


_STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# image pattern (fnmatch) -> layout. First match wins; an image not listed fails the pod.
IMAGES: list[tuple[str, ImageLayout]] = [
    # trainer/Dockerfile: NGC PyTorch with the project installed into its system Python (here: this
    # venv at /usr/local, the layout of Python's official images), user 10001, HOME=/home/sobert.
    (
        "*sobert-trainer*",
        ImageLayout(
            env={"PATH": _STD_PATH, "HOME": "/home/sobert", "PYTHONUNBUFFERED": "1"},
            user=10001,
            workdir="/home/sobert",
            python_at="/usr/local",
            account=("sobert", "/home/sobert"),
        ),
    ),
    # operator/Dockerfile: the venv at /opt/venv, user 10001, HOME=/tmp, ENTRYPOINT kopf run --standalone.
    (
        "*sobert-controller*",
        ImageLayout(
            env={
                "PATH": "/opt/venv/bin:" + _STD_PATH,
                "HOME": "/tmp",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
                "SOBERT_CLUSTER_CONFIG": "/etc/sobert/cluster.yaml",
            },
            user=10001,
            workdir="/",
            entrypoint=["kopf", "run", "--standalone"],
            cmd=["--liveness=http://0.0.0.0:8080/healthz", "-m", "sobert_operator.controller.main"],
            python_at="/opt/venv",
            account=("sobert", "/tmp"),
        ),
    ),
    # The Training Operator's PyTorchJob init container (`--pytorch-init-container-image`, default
    # alpine:3.10, pkg/controller.v1/pytorch/initcontainer.go) runs `nslookup <master>` in a loop.
    # Its names live in /etc/hosts here, which nslookup (a DNS client) does not read: the shim
    # answers from /etc/hosts through getent, as the cluster DNS would from the Service.
    (
        "alpine*",
        ImageLayout(
            env={"PATH": _STD_PATH},
            user=0,
            workdir="/",
            cmd=["/bin/sh"],
            shims={"nslookup": '#!/bin/sh\nout=$(getent hosts "$1") || exit 1\necho "Name: $1"\necho "$out"\n'},
        ),
    ),
]


def image_layout(image: str) -> ImageLayout:
    for pattern, layout in IMAGES:
        if fnmatch.fnmatch(image, pattern):
            return layout
    raise LookupError(f"image {image!r} is not in the testbed's image table (sobert_testbed/sandbox.py IMAGES)")


# --------------------------------------------------------------------------------------------
# Network


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def ensure_bridge(name: str, gateway_cidr: str) -> None:
    """The node network: a Linux bridge holding the host's address on the pod network."""
    if _ip("link", "show", name, check=False).returncode != 0:
        _ip("link", "add", "name", name, "type", "bridge")
        _ip("addr", "add", gateway_cidr, "dev", name)
    _ip("link", "set", name, "up")


def delete_bridge(name: str) -> None:
    _ip("link", "del", name, check=False)


def create_pod_network(netns: str, bridge: str, address_cidr: str, gateway: str) -> None:
    """The pod's network namespace with `eth0` at `address_cidr` on `bridge`."""
    host_end = "v" + netns[-12:]
    delete_pod_network(netns)
    _ip("netns", "add", netns)
    _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _ip("link", "set", host_end, "master", bridge, "up")
    _ip("-n", netns, "addr", "add", address_cidr, "dev", "eth0")
    _ip("-n", netns, "link", "set", "eth0", "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "route", "add", "default", "via", gateway)


def delete_pod_network(netns: str) -> None:
    _ip("netns", "del", netns, check=False)  # the veth pair goes with it


# --------------------------------------------------------------------------------------------
# Containers

# Runs as root inside the new namespaces: mount, name the host, drop to the user, exec.
_BOOTSTRAP = r"""
import ctypes, json, os, socket, sys
# Everything it imports, imported before it becomes the container's user: the host's Python may
# not be readable by that user (/root is 0700 on some hosts); os.execvpe imports warnings.
import warnings
c = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
def mount(source, target, flags):
    if libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}")
# Open every source before mounting anything: a mount may hide a later source (e.g. /tmp).
sources = [os.open(source, os.O_PATH) for _, source, _ in c["binds"]]
# Mount points this machine lacks are made in overlays of their nearest existing directory, so
# they exist in the container only.
for lower, upper, work in c["overlays"]:
    options = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if libc.mount(b"overlay", lower.encode(), b"overlay", 0, options) != 0:
        raise OSError(ctypes.get_errno(), f"overlay on {lower}")
for (target, source, readonly), fd in zip(c["binds"], sources):
    if not os.path.lexists(target):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
    mount(f"/proc/self/fd/{fd}", target, MS_BIND | MS_REC)
    if readonly:
        mount("none", target, MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.close(fd)
socket.sethostname(c["hostname"])
os.chdir(c["workdir"])
os.setgroups(c["groups"])
os.setgid(c["gid"])
os.setuid(c["uid"])
try:
    os.execvpe(c["command"][0], c["command"], c["env"])
except OSError as exc:
    print(f"exec {c['command'][0]}: {exc}", file=sys.stderr)
    sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
"""


def _traversable_shims(path: Path, shim_root: Path) -> list[tuple[str, str, bool]]:
    """Binds that make `path` reachable for a non-root user when an ancestor is not (e.g. a
    Python under /root, mode 0700): a fresh 0755 directory tree over that ancestor holding only
    `path`, as an image would have it."""
    for ancestor in reversed(path.parents):
        if ancestor == Path("/"):
            continue
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            relative = path.relative_to(ancestor)
            shim = shim_root / ancestor.name
            (shim / relative).mkdir(parents=True, exist_ok=True)
            for directory in [shim, *(shim / p for p in reversed(relative.parents) if str(p) != ".")]:
                directory.chmod(0o755)
            return [(str(ancestor), str(shim), False), (str(path), str(path), True)]
    return []


def container_binds(layout: ImageLayout, container_root: Path) -> list[tuple[str, str, bool]]:
    """The image's part of the container's filesystem: its Python, shims, a private /tmp and HOME."""
    binds: list[tuple[str, str, bool]] = []
    tmp = container_root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)
    binds.append(("/tmp", str(tmp), False))
    home = layout.env.get("HOME")
    if home and home != "/tmp":
        home_dir = container_root / "home"
        home_dir.mkdir(parents=True, exist_ok=True)
        os.chown(home_dir, layout.user, layout.user)
        binds.append((home, str(home_dir), False))
    if layout.python_at:
        binds.append((layout.python_at, str(VENV), True))
        binds += _traversable_shims(Path(sys.base_prefix), container_root / "shims")
        # Absolute paths baked into the environment (console scripts' shebangs, the editable
        # install's source paths) must resolve inside the container, also where the checkout
        # lives under /tmp, which the container's own /tmp hides.
        for path in sorted({VENV.resolve(), CHECKOUT, Path(sys.base_prefix).resolve()}):
            if path.is_relative_to("/tmp"):
                binds.append((str(path), str(path), True))
    if layout.account:
        # The image's /etc/passwd and /etc/group know its user (kopf, Ray and getpass look it up).
        name, home_path = layout.account
        etc = container_root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        passwd, group = etc / "passwd", etc / "group"
        passwd.write_text(
            Path("/etc/passwd").read_text() + f"{name}:x:{layout.user}:{layout.user}::{home_path}:/bin/bash\n"
        )
        group.write_text(Path("/etc/group").read_text() + f"{name}:x:{layout.user}:\n")
        binds += [("/etc/passwd", str(passwd), True), ("/etc/group", str(group), True)]
    if layout.shims:
        bin_dir = container_root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name, script in layout.shims.items():
            (bin_dir / name).write_text(script)
            (bin_dir / name).chmod(0o755)
        binds.append(("/usr/local/bin", str(bin_dir), True))
    return binds


def start_container(
    *,
    netns: str,
    hostname: str,
    command: list[str],
    env: dict[str, str],
    workdir: str,
    uid: int,
    gid: int,
    groups: list[int],
    binds: list[tuple[str, str, bool]],
    log: Path,
) -> subprocess.Popen:
    """Start one container; the handle is `unshare`, which waits for the container's PID 1 and
    exits with its status (re-raising the signal that killed it). Mounts are applied parents first."""
    ordered = sorted(binds, key=lambda bind: bind[0].count("/"))
    config = {
        "binds": ordered,
        # A fresh writable layer per attempt, beside its log.
        "overlays": _overlays([target for target, _, _ in ordered], log.with_suffix(".overlays")),
        "hostname": hostname[:63],
        "command": command,
        "env": env,
        "workdir": workdir,
        "uid": uid,
        "gid": gid,
        "groups": groups,
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{netns}",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--uts",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            sys.executable,
            "-I",
            "-c",
            _BOOTSTRAP,
            json.dumps(config),
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        start_new_session=True,
    )


def _overlays(targets: list[str], root: Path) -> list[tuple[str, str, str]]:
    """(lower, upper, work) of an overlay for each nearest existing directory of a mount point
    this machine lacks (the ServiceAccount token's /var/run/secrets/..., /etc/sobert): the
    container makes the mount point inside it, and the machine never gets it. Directly under `/`
    (/scratch, /opt/venv) the mount point is still made on the machine: an overlay cannot stand
    in for the root here."""
    lowers: list[str] = []
    for target in targets:
        path = Path(target)
        if os.path.lexists(path):
            continue
        while not os.path.lexists(path.parent):
            path = path.parent
        lower = os.path.realpath(path.parent)
        if lower != "/" and not any(Path(lower).is_relative_to(done) for done in lowers):
            lowers.append(lower)
    overlays = []
    for index, lower in enumerate(lowers):
        upper, work = root / str(index) / "upper", root / str(index) / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        overlays.append((lower, str(upper), str(work)))
    return overlays


def container_pid1(handle: subprocess.Popen) -> int | None:
    """The container's PID 1 as seen from here: the child `unshare --fork` started."""
    try:
        children = Path(f"/proc/{handle.pid}/task/{handle.pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


# --------------------------------------------------------------------------------------------
# The `kubernetes` Service inside a pod (kube-proxy's job)

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def listen_in_pod(netns: str, address: str, port: int):
    """A listening socket at `address:port` inside the pod's network namespace (the address is
    added to the pod's loopback). Network namespaces are per thread: this thread enters the pod's,
    opens the socket (which stays there) and comes back."""
    import socket

    _ip("-n", netns, "addr", "add", f"{address}/32", "dev", "lo")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            server = socket.create_server((address, port), backlog=64)
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return server


def forward(server, upstream: tuple[str, int]) -> None:
    """Accept on `server` (until it is closed) and splice each connection to `upstream`: what
    kube-proxy's userspace mode did for a ClusterIP Service."""
    import socket
    import threading

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    while True:
        try:
            client, _ = server.accept()
        except OSError:
            return
        try:
            backend = socket.create_connection(upstream, timeout=10)
            backend.settimeout(None)
        except OSError:
            client.close()
            continue
        threading.Thread(target=pump, args=(client, backend), daemon=True).start()
        threading.Thread(target=pump, args=(backend, client), daemon=True).start()
