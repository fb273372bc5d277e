"""`python -m sobert_testbed` (make dev-cluster) where nothing runs: it says so and stops cleanly."""

from __future__ import annotations

from sobert_testbed.__main__ import main


def test_status_and_down_with_nothing_running(tmp_path, capsys):
    assert main(["status", f"--workdir={tmp_path}"]) == 1
    assert "no cluster tier running" in capsys.readouterr().out
    (tmp_path / "testbed.pid").write_text("999999999")  # a process long gone
    assert main(["down", f"--workdir={tmp_path}"]) == 0
    assert not (tmp_path / "testbed.pid").exists()
