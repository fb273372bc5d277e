import json

import pytest

from sobert_api.storage import MANIFEST, Storage, StorageError


def make_tree(root, files):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_publish_then_fetch_roundtrip(tmp_path):
    make_tree(tmp_path / "src", {"a.bin": b"abc", "sub/b.idx": b"\x00\x01", MANIFEST: b"stale"})
    storage = Storage.open(str(tmp_path / "store"))
    manifest = storage.publish_tree(tmp_path / "src", "data/d1", extra={"dataset_id": "d1"})
    assert set(manifest["files"]) == {"a.bin", "sub/b.idx"}  # a stale manifest is never a payload file
    assert storage.read_manifest("data/d1")["dataset_id"] == "d1"
    storage.fetch_tree("data/d1", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "b.idx").read_bytes() == b"\x00\x01"


def test_tree_without_manifest_is_absent(tmp_path):
    storage = Storage.open(str(tmp_path))
    make_tree(tmp_path / "data" / "half", {"x.bin": b"1"})
    assert storage.read_manifest("data/half") is None
    with pytest.raises(StorageError, match="never fully published"):
        storage.fetch_tree("data/half", tmp_path / "o")


def test_corrupted_file_is_detected(tmp_path):
    make_tree(tmp_path / "src", {"a.bin": b"abc"})
    storage = Storage.open(str(tmp_path / "store"))
    storage.publish_tree(tmp_path / "src", "t")
    (tmp_path / "store" / "t" / "a.bin").write_bytes(b"abd")
    with pytest.raises(StorageError, match="sha256 does not match"):
        storage.fetch_tree("t", tmp_path / "o")


def test_failed_publish_leaves_previous_tree_intact(tmp_path, monkeypatch):
    make_tree(tmp_path / "v1", {"a.bin": b"v1"})
    make_tree(tmp_path / "v2", {"a.bin": b"v2", "b.bin": b"v2"})
    storage = Storage.open(str(tmp_path / "store"))
    storage.publish_tree(tmp_path / "v1", "t")
    import shutil

    real_copy, calls = shutil.copyfile, []

    def failing_copy(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        storage.publish_tree(tmp_path / "v2", "t")
    monkeypatch.undo()
    assert storage.read_bytes("t/a.bin") == b"v1"
    assert set(storage.read_manifest("t")["files"]) == {"a.bin"}
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.endswith(".partial")]


def test_write_bytes_is_atomic_and_lists_keys(tmp_path):
    storage = Storage.open(str(tmp_path))
    storage.write_json("runs/r/spec.json", {"a": 1})
    storage.append_line("runs/r/log.jsonl", json.dumps({"step": 1}))
    storage.append_line("runs/r/log.jsonl", json.dumps({"step": 2}))
    assert storage.list("runs") == ["runs/r/log.jsonl", "runs/r/spec.json"]
    assert storage.read_bytes("runs/r/log.jsonl").count(b"\n") == 2
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes("nope")


def test_child_storage_is_rooted_below(tmp_path):
    storage = Storage.open(str(tmp_path)).child("runs/r")
    storage.write_bytes("x", b"1")
    assert (tmp_path / "runs" / "r" / "x").read_bytes() == b"1"
