"""The project's images, built on this machine from its Dockerfiles, as a cluster's nodes would
pull them from a registry.

- **Tools**: Debian's buildah (builds), mmdebstrap (stand-in bases) and runc (runs containers,
  see `oci.py`), installed by testbed/scripts/install-image-tools.sh. Images live in buildah's
  local store (containers/storage under /var/lib/containers), which is this testbed's "registry":
  an image not in it cannot be pulled (the kubelet reports `ErrImagePull`).
- **Stand-in bases**: no registry is reachable here, so the upstream bases the Dockerfiles name
  are built from Debian packages (and PyPI, for the NGC one) and tagged under the upstream names;
  the Dockerfiles build unchanged with `--pull-never`. `STAND_INS` says how each differs from the
  real base (docs/testbed.md repeats it). Each is rebuilt only when its recipe changes: the
  recipe's digest is a label on the image.
- **The project's images**: `buildah bud --layers`, so a rebuild reuses every layer whose
  instruction and inputs (the files a COPY takes) are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sobert_testbed import SCRIPTS, MissingPrerequisiteError
from sobert_testbed.oci import Container, ImageConfig, RuncContainer, runtime_spec

RECIPE_LABEL = "dev.sobert.testbed.recipe"
_STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# pip inside a build or a stand-in reaches PyPI only through the host's CA bundle and pip
# configuration (../shared/TESTBED.md); its cache is the host's, so torch is downloaded once.
_HOST_FILES = ("/etc/ssl/certs", "/etc/pip.conf")


@dataclass(frozen=True)
class StandIn:
    """A stand-in for an upstream base image: a Debian root filesystem, then `pip` packages."""

    name: str  # the upstream name it is tagged under
    packages: tuple[str, ...]  # Debian packages (mmdebstrap --include)
    hooks: tuple[str, ...]  # shell commands run on the root filesystem ($1), as mmdebstrap customize hooks
    env: tuple[str, ...]  # the upstream image's ENV that the Dockerfiles rely on
    cmd: tuple[str, ...]
    pip: tuple[str, ...] = ()  # then `pip install` into its system Python
    differs: str = ""  # how it differs from the upstream image (docs/testbed.md)

    def recipe_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:16]


_PYTHON_HOOKS = (
    # The official image's Python is /usr/local/bin/python{,3}; Debian's is /usr/bin/python3.11.
    'ln -sf /usr/bin/python3.11 "$1/usr/local/bin/python"',
    'ln -sf /usr/bin/python3.11 "$1/usr/local/bin/python3"',
    # The official (and NGC's) Python takes a system-wide `pip install`; Debian's refuses (PEP 668).
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
)
PYTHON_SLIM = StandIn(
    name="docker.io/library/python:3.11-slim-bookworm",
    packages=("python3.11", "python3.11-venv", "python3-pip", "ca-certificates"),
    hooks=_PYTHON_HOOKS,
    env=(f"PATH={_STD_PATH}", "LANG=C.UTF-8"),
    cmd=("python3",),
    differs="Debian bookworm's Python 3.11 (3.11.2) from its packages, not python.org's build of the "
    "latest 3.11 under /usr/local.",
)
NGC_PYTORCH = StandIn(
    name="nvcr.io/nvidia/pytorch:25.11-py3",
    # NGC's image has wget, which KubeRay's readiness probes of the Ray head and workers run
    # (kuberay v1.5.1 ray-operator/controllers/ray/utils/constant.go BaseWgetHealthCommand).
    packages=(*PYTHON_SLIM.packages, "wget"),
    hooks=(*_PYTHON_HOOKS, 'ln -sf /usr/bin/python3.11 "$1/usr/bin/python"'),
    env=(f"PATH={_STD_PATH}", "LANG=C.UTF-8"),
    cmd=("/bin/bash",),
    pip=("torch==2.13.0", "numpy==2.4.6"),  # the dev machines' pins (constraints.txt, the dev venv)
    differs="Debian bookworm with Python 3.11, not Ubuntu 24.04 with 3.12; torch 2.13.0 and numpy "
    "from PyPI, not NGC's torch 2.10.0a0 build; no CUDA toolkit, cuDNN, NCCL, TransformerEngine or "
    "apex. Nothing here runs on a GPU.",
)
STAND_INS = (PYTHON_SLIM, NGC_PYTORCH)


def normalize(reference: str) -> str:
    """An image reference as the CRI names it (docker/distribution `ParseNormalizedNamed` +
    `TagNameOnly`): `alpine:3.10` is `docker.io/library/alpine:3.10`, no tag is `:latest`."""
    name, _, digest = reference.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}"
        first, _, rest = name.partition("/")
    if first == "docker.io" and "/" not in rest:
        name = f"docker.io/library/{rest}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def ensure_tools() -> None:
    """buildah, runc and mmdebstrap, installed if missing; raises `MissingPrerequisiteError`."""
    result = subprocess.run(
        ["bash", str(SCRIPTS / "install-image-tools.sh")], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise MissingPrerequisiteError(f"buildah/runc/mmdebstrap are not installable here: {result.stderr[-2000:]}")


def _buildah(*args: str, timeout: float = 1800, **kwargs) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args[:3])} failed ({result.returncode}): {result.stderr[-4000:]}")
    return result.stdout.strip()


def image_config(image: str) -> dict | None:
    """The image's OCI image configuration (`config` of the image-spec: User, Env, Entrypoint,
    Cmd, Labels, ...), or None when it is not in the local store (what a node could run without a
    pull) or there is no store (buildah not installed). One `buildah inspect`."""
    if shutil.which("buildah") is None:
        return None
    found = subprocess.run(["buildah", "inspect", "--type", "image", normalize(image)], capture_output=True, text=True)
    return json.loads(found.stdout)["OCIv1"].get("config", {}) if found.returncode == 0 else None


def _host_volumes() -> list[str]:
    volumes = [f"--volume={path}:{path}:ro" for path in _HOST_FILES if os.path.exists(path)]
    cache = Path.home() / ".cache" / "pip"
    cache.mkdir(parents=True, exist_ok=True)
    return [*volumes, f"--volume={cache}:/root/.cache/pip"]


def stand_in(base: StandIn, workdir: Path) -> str:
    """`base` in the local store, built unless an image of the same recipe is there; its name."""
    digest = base.recipe_digest()
    if ((image_config(base.name) or {}).get("Labels") or {}).get(RECIPE_LABEL) == digest:
        return base.name
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        hooks = [f"--customize-hook={hook}" for hook in base.hooks]
        command = ["mmdebstrap", "--variant=minbase", f"--include={','.join(base.packages)}", *hooks]
        result = subprocess.run([*command, "bookworm", str(rootfs)], capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed for {base.name}: {result.stderr[-4000:]}")
        container = _buildah("from", "scratch")
        try:
            _buildah("add", container, str(rootfs), "/")
            if base.pip:
                pip = ["python3", "-m", "pip", "install", "--no-warn-script-location", *base.pip]
                _buildah("run", "--isolation=chroot", "--network=host", *_host_volumes(), container, "--", *pip)
            config = [f"--env={env}" for env in base.env]
            _buildah(
                "config", *config, f"--cmd={json.dumps(list(base.cmd))}", f"--label={RECIPE_LABEL}={digest}", container
            )
            _buildah("commit", "--quiet", "--rm", container, base.name)
        except BaseException:
            subprocess.run(["buildah", "rm", container], capture_output=True)
            raise
    return base.name


def build(dockerfile: Path, tag: str, context: Path) -> str:
    """Build `dockerfile` as `tag` (its bases must be in the store); returns the image id. Layers
    whose instruction and inputs are unchanged come from the cache."""
    return _buildah(
        "bud",
        "--quiet",
        "--layers",
        "--isolation=chroot",
        "--network=host",
        "--pull-never",
        *_host_volumes(),
        f"--file={dockerfile}",
        f"--tag={tag}",
        str(context),
    ).splitlines()[-1]


def project_image(checkout: Path, dockerfile: str, tag: str, base: StandIn, workdir: Path) -> str:
    """One of the project's images, `tag`, built from `checkout`'s `dockerfile` on the stand-in
    for its `base` (both built only where their inputs changed); returns `tag`."""
    ensure_tools()
    stand_in(base, workdir)
    build(checkout / dockerfile, tag, checkout)
    return tag


class Ended(NamedTuple):
    """How a container ended: its exit status (128+N for signal N), output, and whether the OOM
    killer ended it."""

    code: int
    output: str
    oom_killed: bool


def run_once(image: str, container: Container, name: str, workdir: Path, timeout: float = 600) -> Ended:
    """Run `container` from `image` under runc to its end."""
    log = workdir / f"{name}.log"
    with root_filesystem(image, name) as rootfs:
        spec = runtime_spec(rootfs, ImageConfig.from_oci(image_config(image) or {}), container)
        runc = RuncContainer(name, spec, container, workdir / f"{name}.bundle", log)
        try:
            code = runc.start().wait(timeout=timeout)
        finally:
            runc.kill(9)
            oom = runc.finish()
    return Ended(code, log.read_text(errors="replace"), oom)


def create_root_filesystem(image: str, name: str) -> Path:
    """A fresh writable root filesystem of `image`: a buildah working container named `name` (the
    image's layers read-only below, the container's own layer on top); `remove_root_filesystem`
    removes it. Raises `LookupError` when the image is not in the store (nothing is pulled)."""
    remove_root_filesystem(name)  # what an interrupted run left
    made = subprocess.run(
        ["buildah", "from", "--pull-never", f"--name={name}", normalize(image)], capture_output=True, text=True
    )
    if made.returncode != 0:
        if image_config(image) is None:
            raise LookupError(f"image {image!r} is not in this node's image store (nothing is pulled here)")
        raise RuntimeError(f"buildah from {image} failed ({made.returncode}): {made.stderr.strip()}")
    return Path(_buildah("mount", name))


def remove_root_filesystem(name: str) -> None:
    subprocess.run(["buildah", "rm", name], capture_output=True)


@contextlib.contextmanager
def root_filesystem(image: str, name: str) -> Iterator[Path]:
    """`create_root_filesystem` for the block's duration."""
    try:
        yield create_root_filesystem(image, name)
    finally:
        remove_root_filesystem(name)


def sweep(prefix: str) -> None:
    """Remove the runc containers and root filesystems whose names start with `prefix` (what a
    killed node left)."""
    if shutil.which("runc") is None or shutil.which("buildah") is None:
        return
    listed = subprocess.run(["runc", "list", "--quiet"], capture_output=True, text=True).stdout.split()
    for name in (n for n in listed if n.startswith(prefix)):
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
    listed = subprocess.run(
        ["buildah", "containers", "--format", "{{.ContainerName}}"], capture_output=True, text=True
    ).stdout.split()
    for name in (n for n in listed if n.startswith(prefix)):
        remove_root_filesystem(name)
