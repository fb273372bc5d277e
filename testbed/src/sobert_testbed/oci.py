"""A container from its image under a real OCI runtime (runc), as kubelet + containerd make one.

`runtime_spec` is pure: it combines the image's configuration (`ImageConfig`: USER, ENV,
ENTRYPOINT/CMD, WORKDIR) with what the pod asks of the container (`Container`) into the OCI
runtime spec's `config.json`. The rules are containerd's CRI plugin's (containerd v1.7.27,
`pkg/cri/opts/spec.go` and `pkg/cri/opts/spec_linux.go`, and `pkg/oci/spec.go` for the defaults);
each function cites the one it follows. `run` starts `runc run` on a bundle holding that spec.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sobert_testbed import SCRIPTS

SHM_DEFAULT_BYTES = (
    64 * 1024 * 1024
)  # containerd's sandbox /dev/shm (pkg/cri/server/sandbox_run_linux.go: defaultShmSize)

# containerd pkg/oci/spec.go defaultUnixCaps(): what a container gets unless the pod drops it.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# containerd pkg/oci/spec_opts.go / CRI defaults: paths a container must not read or write.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's configuration (image-spec `config`) a container starts from."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""

    @classmethod
    def from_oci(cls, config: dict) -> ImageConfig:
        return cls(
            user=config.get("User") or "",
            env=tuple(config.get("Env") or ()),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            working_dir=config.get("WorkingDir") or "",
        )


@dataclass(frozen=True)
class Mount:
    """A volume in the container: a host path bind-mounted, or a tmpfs of `size_bytes`."""

    target: str
    source: str = ""  # host path (bind); empty for a tmpfs
    read_only: bool = False
    size_bytes: int | None = None  # tmpfs only; None: the kernel's default (half the memory)

    def oci(self) -> dict:
        if not self.source:
            options = ["nosuid", "nodev", "mode=1777"]
            if self.size_bytes is not None:
                options.append(f"size={self.size_bytes}")
            return {"destination": self.target, "type": "tmpfs", "source": "tmpfs", "options": options}
        options = ["rbind", "rprivate", "ro" if self.read_only else "rw"]
        return {"destination": self.target, "type": "bind", "source": self.source, "options": options}


@dataclass(frozen=True)
class Container:
    """What the pod spec asks of one container, after the kubelet's part (env resolved, volumes
    made): the CRI `ContainerConfig` in the fields this testbed uses."""

    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # in the pod's order
    working_dir: str = ""
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()  # the pod's supplementalGroups and fsGroup
    read_only_root: bool = False
    allow_privilege_escalation: bool | None = None
    capabilities_add: tuple[str, ...] = ()
    capabilities_drop: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    shm_bytes: int = SHM_DEFAULT_BYTES  # a Memory emptyDir at /dev/shm (a mount) replaces it
    memory_limit_bytes: int | None = None  # set on `cgroups_path` by `RuncContainer`
    hostname: str = ""
    network_namespace: str | None = None  # a path (/var/run/netns/POD); None: the host's network
    cgroups_path: str = ""  # the container's cgroup (under each v1 hierarchy); runc runs in its child `runc`
    seccomp: str | None = None  # the securityContext's seccompProfile.type; None: not set (unconfined)


def process_args(image: ImageConfig, command: tuple[str, ...], args: tuple[str, ...]) -> list[str]:
    """containerd `WithProcessArgs` (pkg/cri/opts/spec.go): a pod's `command` replaces the image's
    ENTRYPOINT and drops its CMD; `args` alone replace CMD after the ENTRYPOINT."""
    if not command:
        if not args:
            args = image.cmd
        if not (len(image.entrypoint) == 1 and image.entrypoint[0] == ""):
            command = image.entrypoint
    if not command and not args:
        raise ValueError("no command specified: neither the pod nor the image gives one")
    return [*command, *args]


def process_env(image: ImageConfig, env: tuple[tuple[str, str], ...]) -> list[str]:
    """containerd: the image's ENV, then each of the container's, replacing one of the same name
    (oci.WithEnv / replaceOrAppendEnvValues)."""
    merged: dict[str, str] = {}
    for entry in image.env:
        name, _, value = entry.partition("=")
        merged[name] = value
    for name, value in env:
        merged.pop(name, None)  # a replaced variable keeps the pod's position
        merged[name] = value
    return [f"{name}={value}" for name, value in merged.items()]


def _passwd(rootfs: Path) -> list[list[str]]:
    path = rootfs / "etc" / "passwd"
    return [line.split(":") for line in path.read_text().splitlines() if line.count(":") >= 6] if path.exists() else []


def _groups(rootfs: Path) -> list[list[str]]:
    path = rootfs / "etc" / "group"
    return [line.split(":") for line in path.read_text().splitlines() if line.count(":") >= 3] if path.exists() else []


def _group_id(rootfs: Path, group: str) -> int:
    if group.isdigit():
        return int(group)
    for name, _, gid, _ in _groups(rootfs):
        if name == group:
            return int(gid)
    raise ValueError(f"no group {group!r} in the image's /etc/group")


def process_user(image: ImageConfig, container: Container, rootfs: Path) -> dict:
    """The container's user, as containerd `WithUserID`/`WithUser`/`WithGroup` and
    `WithAdditionalGIDs` (pkg/oci/spec_opts.go) resolve it in the image's /etc/passwd and
    /etc/group: `runAsUser` over the image's USER; the gid from `runAsGroup`, else USER's group
    part, else the user's passwd entry, else 0; additional gids from /etc/group membership and the
    pod's supplemental groups."""
    passwd = _passwd(rootfs)
    name, gid = None, None
    if container.run_as_user is not None:
        uid = container.run_as_user
    else:
        user, _, group = image.user.partition(":")
        user = user or "0"
        if user.isdigit():
            uid = int(user)
        else:
            entry = next((e for e in passwd if e[0] == user), None)
            if entry is None:
                raise ValueError(f"no user {user!r} in the image's /etc/passwd")
            uid = int(entry[2])
        if group:
            gid = _group_id(rootfs, group)
    entry = next((e for e in passwd if e[2] == str(uid)), None)
    if entry is not None:
        name = entry[0]
        gid = int(entry[3]) if gid is None else gid
    if container.run_as_group is not None:
        gid = container.run_as_group
    gid = 0 if gid is None else gid
    additional = [gid]
    if name is not None:
        additional += [int(g[2]) for g in _groups(rootfs) if name in g[3].split(",")]
    additional += list(container.supplemental_groups)
    return {"uid": uid, "gid": gid, "additionalGids": sorted(set(additional))}


def capabilities(add: tuple[str, ...], drop: tuple[str, ...]) -> list[str]:
    """The Kubernetes `securityContext.capabilities` on containerd's default set
    (pkg/cri/opts/spec_linux.go `WithCapabilities` via `cap.TweakCapabilities`): `ALL` in `drop`
    removes every default, `ALL` in `add` grants all."""
    names = {f"CAP_{c.upper()}" if not c.upper().startswith("CAP_") else c.upper() for c in add}
    dropped = {f"CAP_{c.upper()}" if not c.upper().startswith("CAP_") else c.upper() for c in drop}
    if "CAP_ALL" in names:
        raise ValueError("capabilities.add: ALL is not granted by this testbed")
    base = set() if "CAP_ALL" in dropped else set(DEFAULT_CAPABILITIES) - dropped
    return sorted(base | names)


def _default_mounts(shm_bytes: int) -> list[dict]:
    """containerd pkg/oci/spec.go populateDefaultUnixSpec, with the CRI's /dev/shm and cgroup mounts."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_bytes}"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def runtime_spec(rootfs: Path, image: ImageConfig, container: Container) -> dict:
    """The OCI runtime spec (`config.json`) of `container` started from `image`, whose root
    filesystem is at `rootfs`."""
    mounts = {m.target: m.oci() for m in container.mounts}
    defaults = [m for m in _default_mounts(container.shm_bytes) if m["destination"] not in mounts]
    # Parents before children: a volume under another volume (or under /dev) mounts after it.
    ordered = sorted(mounts.values(), key=lambda m: m["destination"].rstrip("/").count("/"))
    caps = capabilities(container.capabilities_add, container.capabilities_drop)
    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if container.network_namespace is not None:
        namespaces.append({"type": "network", "path": container.network_namespace})
    linux: dict = {"namespaces": namespaces, "maskedPaths": list(MASKED_PATHS), "readonlyPaths": list(READONLY_PATHS)}
    if container.cgroups_path:
        # runc's own cgroup, below the one that carries the limits (`RuncContainer`).
        linux["cgroupsPath"] = f"{container.cgroups_path.rstrip('/')}/runc"
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": process_user(image, container, rootfs),
            "args": process_args(image, container.command, container.args),
            "env": process_env(image, container.env),
            "cwd": container.working_dir or image.working_dir or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            # Kubernetes: no_new_privs only when allowPrivilegeEscalation is false
            # (pkg/kubelet/kuberuntime/security_context.go via securitycontext.AddNoNewPrivileges).
            "noNewPrivileges": container.allow_privilege_escalation is False,
        },
        "root": {"path": str(rootfs), "readonly": container.read_only_root},
        "hostname": container.hostname,
        "mounts": defaults + ordered,
        "linux": linux,
    }


SECCOMP_SCRIPT = SCRIPTS / "build-seccomp-default.sh"


@functools.cache
def _seccomp_default_tool() -> Path:
    """containerd's default profile generator (testbed/scripts/seccomp), built once and cached."""
    result = subprocess.run(["bash", str(SECCOMP_SCRIPT)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{SECCOMP_SCRIPT.name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def with_seccomp(spec: dict, profile: str | None) -> dict:
    """`spec` with the seccomp filter a pod's `seccompProfile.type` asks for, as containerd's CRI
    plugin decides it (containerd v1.7.27, pkg/cri/sbserver/container_create_linux.go,
    generateSeccompSpecOpts): `RuntimeDefault`, containerd's default profile for this spec (it
    allows more with more capabilities: contrib/seccomp DefaultProfile, computed by that very
    function); `Unconfined` or not set, none. `Localhost` profiles are not installed on these
    nodes: refused, as containerd refuses a profile it cannot read."""
    if profile in (None, "Unconfined"):
        return spec
    if profile != "RuntimeDefault":
        raise ValueError(f"seccompProfile.type {profile!r}: this testbed applies RuntimeDefault or Unconfined")
    result = subprocess.run(
        [str(_seccomp_default_tool())], input=json.dumps(spec), capture_output=True, text=True, check=True, timeout=60
    )
    return {**spec, "linux": {**spec["linux"], "seccomp": json.loads(result.stdout)}}


CGROUPS = Path("/sys/fs/cgroup")  # v1 hierarchies, one per controller (docs/testbed.md)
MEMORY_CGROUPS = CGROUPS / "memory"


class RuncContainer:
    """One container under runc, as containerd's shim keeps one: `runc run` in the foreground
    (it forwards signals to the container's init and exits with its status, 128+N when signal N
    killed it, then deletes the container).

    The memory limit is set here, on the container's own cgroup (`Container.cgroups_path`, made
    and removed here, as the kubelet owns pod cgroups), and runc runs in a child of it: the
    OOM notification, registered on that cgroup before the start, survives runc's cleanup of its
    own. It is cgroup v1's `memory.oom_control` event through `cgroup.event_control`, as
    containerd learns of an OOM kill (containerd/cgroups v1 `memory.go`, OOMEventFD)."""

    def __init__(self, container_id: str, spec: dict, container: Container, bundle: Path, log: Path) -> None:
        self.id = container_id
        self.spec = spec
        self.container = container
        self.bundle = bundle
        self.log = log
        self.process: subprocess.Popen | None = None
        self._oom_event: int | None = None

    def _memory_cgroup(self) -> Path | None:
        path = self.container.cgroups_path.strip("/")
        return MEMORY_CGROUPS / path if path else None

    def start(self) -> subprocess.Popen:
        self.bundle.mkdir(parents=True, exist_ok=True)
        spec = with_seccomp(self.spec, self.container.seccomp)
        (self.bundle / "config.json").write_text(json.dumps(spec, indent=1))
        subprocess.run(["runc", "delete", "--force", self.id], capture_output=True)  # an earlier attempt's
        group = self._memory_cgroup()
        if self.container.memory_limit_bytes is not None:
            if group is None:
                raise ValueError(f"container {self.id}: a memory limit needs a cgroups_path")
            group.mkdir(parents=True, exist_ok=True)
            (group / "memory.limit_in_bytes").write_text(str(self.container.memory_limit_bytes))
            self._oom_event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            control = os.open(group / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                (group / "cgroup.event_control").write_text(f"{self._oom_event} {control}")
            finally:
                os.close(control)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                ["runc", "run", "--bundle", str(self.bundle), self.id],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self.process

    def pid1(self) -> int | None:
        """The container's init as seen from here (None once it has ended)."""
        result = subprocess.run(["runc", "state", self.id], capture_output=True, text=True)
        if result.returncode != 0:
            return None
        state = json.loads(result.stdout)
        return state["pid"] if state.get("status") == "running" else None

    def kill(self, sig: int) -> None:
        subprocess.run(["runc", "kill", self.id, str(sig)], capture_output=True)

    def finish(self) -> bool:
        """After the end: whether the OOM killer ended it; the runtime's leftovers removed."""
        subprocess.run(["runc", "delete", "--force", self.id], capture_output=True)
        oom = False
        if self._oom_event is not None:
            with contextlib.suppress(BlockingIOError):  # nothing signalled
                oom = os.eventfd_read(self._oom_event) > 0
            os.close(self._oom_event)
            self._oom_event = None
        if self.container.cgroups_path:
            remove_cgroup(self.container.cgroups_path)  # runc removed its own child; this one is ours
        return oom


def remove_cgroup(path: str) -> None:
    """rmdir `path` in every v1 hierarchy where it exists and is empty."""
    for hierarchy in CGROUPS.iterdir():
        with contextlib.suppress(OSError):
            (hierarchy / path.strip("/")).rmdir()
