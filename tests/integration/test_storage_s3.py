"""Storage against a real S3 server (SeaweedFS on 127.0.0.1): round trips, checksums, credentials."""

from __future__ import annotations

import gzip
import secrets

import pytest

from sobert_api.storage import Storage, StorageError

pytestmark = pytest.mark.integration


def test_publish_fetch_roundtrip_multipart(s3_bucket, tmp_path):
    source = tmp_path / "src"
    (source / "shards").mkdir(parents=True)
    big = bytes(range(256)) * (300 * 1024)  # 75 MiB: above the 64 MiB multipart threshold
    (source / "shards" / "a.bin").write_bytes(big)
    (source / "tokenizer.json").write_text("{}")
    storage = Storage.open(f"s3://{s3_bucket}/prefix")
    manifest = storage.publish_tree(source, "data/d", extra={"dataset_id": "d"})
    assert manifest["files"]["shards/a.bin"]["bytes"] == len(big)
    assert storage.list("data/d") == ["data/d/manifest.json", "data/d/shards/a.bin", "data/d/tokenizer.json"]
    storage.fetch_tree("data/d", tmp_path / "out")
    assert (tmp_path / "out" / "shards" / "a.bin").read_bytes() == big


def test_unpublished_tree_is_invisible_and_tampering_is_caught(s3_bucket, s3_server, tmp_path):
    storage = Storage.open(f"s3://{s3_bucket}")
    storage.write_bytes("half/x.bin", b"partial")  # files without a manifest: a crashed publish
    assert storage.read_manifest("half") is None
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.bin").write_bytes(b"good")
    storage.publish_tree(tmp_path / "t", "tree")
    s3_server.client().put_object(Bucket=s3_bucket, Key="tree/x.bin", Body=b"evil")
    with pytest.raises(StorageError, match="sha256 does not match"):
        storage.fetch_tree("tree", tmp_path / "o")


def test_wrong_secret_is_rejected_without_leaking_it(s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    storage = Storage.open(f"s3://{s3_bucket}")
    with pytest.raises(StorageError) as error:
        storage.write_bytes("k", b"v")
    assert "SignatureDoesNotMatch" in str(error.value) or "AccessDenied" in str(error.value)
    assert "not-the-secret" not in str(error.value)


@pytest.mark.parametrize("kind", ["gz", "7z"])
def test_prepare_streams_compressed_dumps_from_s3(s3_bucket, tmp_path, kind):
    """Through the decompressor process, which reads S3 with the same credentials (a .7z is
    spooled to local disk first: its index is at the end)."""
    import py7zr

    from conftest import FIXTURES
    from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset

    storage = Storage.open(f"s3://{s3_bucket}/sobert")
    dump = FIXTURES / "dump"
    posts = dump / "example.stackexchange.com-Posts.xml"
    if kind == "gz":
        storage.write_bytes("dumps/example.stackexchange.com-Posts.xml.gz", gzip.compress(posts.read_bytes()))
    else:
        with py7zr.SevenZipFile(tmp_path / "posts.7z", "w") as archive:
            archive.write(posts, "Posts.xml")
        storage.upload_file(tmp_path / "posts.7z", "dumps/example.stackexchange.com-Posts.7z")
    storage.upload_file(dump / "example.stackexchange.com-Comments.xml", "dumps/example.stackexchange.com-Comments.xml")
    name = "example.stackexchange.com-Posts.xml.gz" if kind == "gz" else "example.stackexchange.com-Posts.7z"
    config = PrepareConfig(
        posts=[storage.uri(f"dumps/{name}")],
        comments=[storage.uri("dumps/example.stackexchange.com-Comments.xml")],
        vocab_size=600,
        workers=1,
    )
    manifest = prepare_dataset(config, storage)
    assert manifest["counts"]["documents"] > 20 and manifest["counts"]["tokens"] > 1000
    assert storage.read_manifest(f"data/{manifest['dataset_id']}") == manifest


def test_a_child_storage_keeps_explicit_credentials(s3_server, s3_bucket, monkeypatch):
    """Keys given explicitly (the controller reads them from a Secret; its pod has no AWS env) reach
    every storage below: a run's checkpoints are listed through `child()`."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    storage = Storage.open(
        f"s3://{s3_bucket}/sobert", s3_server.endpoint_url, (s3_server.access_key, s3_server.secret_key)
    )
    storage.write_json("runs/r/pretrain/checkpoints/iter_0000001/manifest.json", {"step": 1})
    assert storage.child("runs/r/pretrain/checkpoints").list() == ["iter_0000001/manifest.json"]


def test_the_test_server_holds_more_buckets_than_a_session_makes(s3_server):
    """Every test makes a bucket, and SeaweedFS gives each its own collection of volumes. With the
    volume count left to `weed mini` (free disk / volume size) the server ran out after ~70
    buckets on an 80 GB disk, and the session's last S3 tests failed with InternalError ("no free
    volumes left"). A session makes ~40; this writes to 120 of its own."""
    client = s3_server.client()
    for i in range(120):
        bucket = f"sobert-capacity-{i}-{secrets.token_hex(3)}"
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
