"""One storage API for a local directory and an `s3://bucket/prefix`.

Everything a run writes goes through a `Storage` rooted at the run's prefix. Single objects are
written atomically (temp file + rename locally; one PUT on S3). A directory of artifacts (data
shards, a checkpoint) is published with `publish_tree`: the files first, then `manifest.json`
with the size and sha256 of each. Readers treat a tree without a manifest as absent, so nobody
ever sees half a shard or half a checkpoint.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
_CHUNK = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI. `code` is the server's error code
    (`NoSuchKey`, `AccessDenied`, ...) when it answered, None when it could not be reached."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key.strip("/")


def _join(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


class Storage(ABC):
    """A root prefix; keys are '/'-separated paths below it."""

    root: str

    @staticmethod
    def open(uri: str, endpoint_url: str | None = None, credentials: tuple[str, str] | None = None) -> Storage:
        """A Storage for a local path or s3:// URI. S3 credentials come from the standard AWS
        environment unless given (access key id, secret key), e.g. read from a Secret."""
        if is_s3(uri):
            return S3Storage(uri, endpoint_url=endpoint_url, credentials=credentials)
        return LocalStorage(uri)

    def uri(self, key: str = "") -> str:
        return self.root.rstrip("/") + ("/" + key.strip("/") if key.strip("/") else "")

    def child(self, key: str) -> Storage:
        """A Storage rooted at `key` below this one, with this one's endpoint and credentials."""
        return Storage.open(self.uri(key), getattr(self, "endpoint_url", None), getattr(self, "credentials", None))

    # -- objects --------------------------------------------------------------------------
    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write one object atomically (readers see the old or the new bytes, never a mix)."""

    @abstractmethod
    def upload_file(self, local_path: str | Path, key: str) -> None: ...

    @abstractmethod
    def download_file(self, key: str, local_path: str | Path) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (recursive), relative to the root, sorted."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    @contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        """A streaming binary reader (bounded memory for large dumps)."""

    def append_line(self, key: str, line: str) -> None:
        """Append one line to a log-like object (rewrites the object on S3: keep such logs small)."""
        existing = self.read_bytes(key) if self.exists(key) else b""
        self.write_bytes(key, existing + line.rstrip("\n").encode() + b"\n")

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_json_if_exists(self, key: str) -> Any:
        """The JSON object at `key`, or None when there is none."""
        return self.read_json(key) if self.exists(key) else None

    def read_json_lines(self, key: str) -> builtins.list[Any]:
        """Each line of a log-like object (`append_line`) as JSON; none when it does not exist."""
        if not self.exists(key):
            return []
        return [json.loads(line) for line in self.read_bytes(key).decode().splitlines() if line.strip()]

    def write_json(self, key: str, value: Any) -> None:
        self.write_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")

    # -- trees ------------------------------------------------------------------------------
    def publish_tree(self, local_dir: str | Path, prefix: str, extra: dict[str, Any] | None = None) -> dict:
        """Copy every file under `local_dir` to `prefix/`, then write the manifest last."""
        local_dir = Path(local_dir)
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(local_dir).as_posix()
            if rel == MANIFEST:  # reserved: the manifest written last is the tree's own
                continue
            files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        manifest = {**(extra or {}), "files": files}
        self._put_tree(local_dir, prefix, list(files))
        self.write_json(_join(prefix, MANIFEST), manifest)
        return manifest

    def read_manifest(self, prefix: str) -> dict | None:
        """The tree's manifest, or None if the tree was never completely published."""
        return self.read_json_if_exists(_join(prefix, MANIFEST))

    def fetch_tree(self, prefix: str, local_dir: str | Path, verify: bool = True) -> dict:
        """Download a published tree, checking every file against the manifest."""
        manifest = self.read_manifest(prefix)
        if manifest is None:
            raise StorageError(f"{self.uri(prefix)}: no {MANIFEST}; the tree was never fully published")
        local_dir = Path(local_dir)
        for rel, meta in manifest["files"].items():
            target = local_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.download_file(_join(prefix, rel), target)
            if verify and sha256_file(target) != meta["sha256"]:
                raise StorageError(f"{self.uri(_join(prefix, rel))}: sha256 does not match {MANIFEST}")
        return manifest

    @abstractmethod
    def _put_tree(self, local_dir: Path, prefix: str, rel_paths: builtins.list[str]) -> None: ...


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = str(Path(root).expanduser().absolute())

    def _path(self, key: str) -> Path:
        return Path(self.root, *[p for p in key.split("/") if p])

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)}: not found") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def append_line(self, key: str, line: str) -> None:
        # O_APPEND of one short line is atomic on local filesystems; no rewrite needed.
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")

    def upload_file(self, local_path: str | Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, target)

    def download_file(self, key: str, local_path: str | Path) -> None:
        source = self._path(key)
        if not source.exists():
            raise StorageError(f"{self.uri(key)}: not found")
        if Path(local_path).absolute() != source:
            shutil.copyfile(source, local_path)

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if not base.exists():
            return []
        root = Path(self.root)
        return sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    @contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise StorageError(f"{self.uri(key)}: not found", "NoSuchKey") from None
        with handle:
            yield handle

    def _put_tree(self, local_dir: Path, prefix: str, rel_paths: builtins.list[str]) -> None:
        # Stage beside the target, then swap directories: the final rename is atomic.
        target = self._path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            for rel in rel_paths:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local_dir / rel, dest)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


# What a boto3 session reads from the environment: a change of any makes a new client.
_AWS_ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CA_BUNDLE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@functools.lru_cache(maxsize=32)
def _s3_client(endpoint_url: str | None, credentials: tuple[str, str] | None, environment: tuple) -> Any:
    """One boto3 S3 client per endpoint, keys and AWS environment, shared by every storage opened
    with them (boto3's low-level clients are thread-safe). Making one costs tens of milliseconds
    and megabytes: a controller that opened one per run and resync spent a third of its time there.

    Each has a session of its own: boto3's default session caches credentials process-wide, so a
    rotated secret (or another run's) would silently keep using the first one it saw; a rotated
    secret is a new key here. `environment` is `_AWS_ENVIRONMENT`'s values, part of the key."""
    import boto3
    from botocore.config import Config

    keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]} if credentials else {}
    # Fail fast on a wrong or unreachable endpoint (botocore's default connect timeout is 60 s,
    # retried): a controller metering hundreds of runs must not hang on one bad bucket.
    config = Config(connect_timeout=10, retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session(**keys).client("s3", endpoint_url=endpoint_url, config=config)


class S3Storage(Storage):
    """S3 via boto3: multipart uploads with SHA-256 checksums the server verifies."""

    def __init__(self, uri: str, endpoint_url: str | None = None, credentials: tuple[str, str] | None = None):
        self.root = uri.rstrip("/")
        self.bucket, self.prefix = split_s3(uri)
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.credentials = credentials  # explicit keys (e.g. from a Secret), kept for child() storages
        from boto3.s3.transfer import TransferConfig

        environment = tuple(os.environ.get(name) for name in _AWS_ENVIRONMENT)
        self._client = _s3_client(self.endpoint_url, credentials, environment)
        self._transfer = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    def _call(self, what: str, key: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise StorageError(f"{self.uri(key)}: {what} failed: {code}", code) from exc
        except BotoCoreError as exc:
            raise StorageError(f"{self.uri(key)}: {what} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"{self.uri(key)}: head failed") from exc

    def read_bytes(self, key: str) -> bytes:
        response = self._call("get", key, self._client.get_object, Bucket=self.bucket, Key=self._key(key))
        return response["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "put",
            key,
            self._client.put_object,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ChecksumAlgorithm="SHA256",
        )

    def upload_file(self, local_path: str | Path, key: str) -> None:
        self._call(
            "upload",
            key,
            self._client.upload_file,
            str(local_path),
            self.bucket,
            self._key(key),
            ExtraArgs={"ChecksumAlgorithm": "SHA256"},
            Config=self._transfer,
        )

    def download_file(self, key: str, local_path: str | Path) -> None:
        self._call(
            "download",
            key,
            self._client.download_file,
            self.bucket,
            self._key(key),
            str(local_path),
            Config=self._transfer,
        )

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        full = full + "/" if full else ""
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        pages = self._call("list", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full)))
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in pages:
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call("delete", prefix, self._client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch})

    @contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        response = self._call("get", key, self._client.get_object, Bucket=self.bucket, Key=self._key(key))
        body = response["Body"]
        try:
            yield io.BufferedReader(_BodyReader(body), buffer_size=_CHUNK)
        finally:
            body.close()

    def _put_tree(self, local_dir: Path, prefix: str, rel_paths: builtins.list[str]) -> None:
        # Objects land at their final keys; the manifest written after them is what makes
        # the tree visible to readers.
        for rel in rel_paths:
            self.upload_file(local_dir / rel, _join(prefix, rel))


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore StreamingBody (reads until it returns b"")."""

    def __init__(self, body) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def open_uri(
    uri: str, endpoint_url: str | None = None, credentials: tuple[str, str] | None = None
) -> Iterator[IO[bytes]]:
    """Stream any single local file or s3:// object (with `credentials`, else the environment's)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with S3Storage(f"s3://{bucket}", endpoint_url, credentials).open_read(key) as handle:
            yield handle
    else:
        path = Path(uri).expanduser()
        with LocalStorage(path.parent).open_read(path.name) as handle:
            yield handle
