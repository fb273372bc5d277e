"""The controller image, built by the test setup from operator/Dockerfile and run from its image
under runc, as the chart runs its pod: user 10001 from the image, read-only root filesystem, an
emptyDir at /tmp, every capability dropped, no privilege escalation. It holds the operator and the
contract packages with their declared dependencies and nothing else (the build fails if the
trainer or torch is there); it meters, observes and reports a run whose storage is on the test S3
server. (The controller image once failed exactly here: no boto3.)"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import ROOT
from sobert_testbed import images
from sobert_testbed.oci import Container, Mount

pytestmark = pytest.mark.integration

WORKERS = ROOT / "tests" / "integration" / "workers"
DUMP = ROOT / "tests" / "fixtures" / "dump"


def as_the_chart_runs_it(*command: str, env: tuple[tuple[str, str], ...] = (), mounts=()) -> Container:
    """The controller container as charts/sobert/templates/deployment.yaml asks for it, with
    `command` in place of the image's ENTRYPOINT (as a pod's `command` replaces it)."""
    return Container(
        command=command,
        env=env,
        read_only_root=True,
        allow_privilege_escalation=False,
        capabilities_drop=("ALL",),
        mounts=(Mount("/tmp"), *mounts),
        seccomp="RuntimeDefault",
    )


def test_the_controller_image_meters_and_reports_a_run_on_s3(controller_image, s3_server, tmp_path):
    bucket = "closure"
    s3_server.client().create_bucket(Bucket=bucket)
    container = as_the_chart_runs_it(
        "python",
        "/sobert-tests/controller_closure.py",
        f"s3://{bucket}/sobert",
        env=tuple(s3_server.env().items()),
        mounts=(Mount("/sobert-tests", str(WORKERS), read_only=True),),
    )  # the host's network: the S3 server listens on 127.0.0.1
    code, output, _ = images.run_once(controller_image, container, "closure-" + tmp_path.name[-8:], tmp_path)
    assert code == 0, output[-4000:]
    # The summary is stdout's last line; stderr's lines may come after it (separate pipes).
    summary = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    assert summary["installed"] == [] and summary["loaded"] == [], summary
    assert summary["ledger"] == 2 and summary["spent_usd"] == pytest.approx(2 * 60 * 2.5 / 3600, rel=1e-3), summary
    assert summary["checkpoint_step"] is None
    assert summary["report_keys"] == ["ledger.jsonl", "report.html", "report.json", "report.md"], summary
    # The objects are on the server, as another client sees them.
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert "sobert/runs/closure/cost/report.html" in keys, keys


def test_the_images_entrypoint_takes_the_pods_args(controller_image, tmp_path):
    """With only `args` (as the chart passes `--namespace=...`), the image's ENTRYPOINT runs them:
    `kopf run --standalone` here, asked for its help."""
    container = Container(args=("--help",), read_only_root=True, mounts=(Mount("/tmp"),))
    code, output, _ = images.run_once(controller_image, container, "entry-" + tmp_path.name[-8:], tmp_path)
    assert code == 0, output
    assert "Usage: kopf run" in output and "--standalone" in output


def test_the_root_filesystem_is_read_only_and_tmp_is_the_pods(controller_image, tmp_path):
    # Everything on stderr: runc copies a container's stdout and stderr through separate pipes, so
    # their relative order in the log is not kept.
    probe = (
        "import os, sys; open('/tmp/ok', 'w').write('x'); sys.stderr.write(f'{os.getuid()} {os.getgid()}\\n'); "
        "open('/opt/venv/x', 'w')"
    )
    code, output, _ = images.run_once(
        controller_image, as_the_chart_runs_it("python", "-c", probe), "rofs-" + tmp_path.name[-8:], tmp_path
    )
    assert code == 1 and "10001 10001" in output and "Read-only file system: '/opt/venv/x'" in output, output


def test_a_container_over_its_memory_limit_is_oom_killed(controller_image, tmp_path):
    """The container's memory cgroup has the pod's limit; the kernel's OOM killer ends it with
    SIGKILL (exit 137) and the cgroup's OOM notification says so, as a node learns that a
    container was OOMKilled. A SIGKILL from elsewhere is not an OOM kill."""
    hog = Container(
        command=("python", "-c", "b = bytearray(300 * 2**20); print('survived')"),
        memory_limit_bytes=100 * 2**20,
        cgroups_path=f"/sobert-testbed/oom-{tmp_path.name[-8:]}",
    )
    ended = images.run_once(controller_image, hog, "oom-" + tmp_path.name[-8:], tmp_path)
    assert ended.code == 137 and ended.oom_killed and "survived" not in ended.output, ended
    fits = Container(
        command=("python", "-c", "b = bytearray(30 * 2**20); print('fits')"),
        memory_limit_bytes=100 * 2**20,
        cgroups_path=f"/sobert-testbed/fits-{tmp_path.name[-8:]}",
    )
    assert images.run_once(controller_image, fits, "fits-" + tmp_path.name[-8:], tmp_path) == (0, "fits\n", False)
    killed = Container(
        command=("sh", "-c", "python -c 'import os; os.kill(os.getpid(), 9)'"),  # PID 1's child: killable
        memory_limit_bytes=100 * 2**20,
        cgroups_path=f"/sobert-testbed/kill-{tmp_path.name[-8:]}",
    )
    assert images.run_once(controller_image, killed, "kill-" + tmp_path.name[-8:], tmp_path) == (
        137,
        "Killed\n",
        False,
    )  # dash says so


def test_runtime_default_seccomp_filters_syscalls_and_unconfined_does_not(controller_image, tmp_path):
    """`seccompProfile: RuntimeDefault` (the chart's pod's) runs under containerd's default profile:
    the kernel reports a filter (/proc/self/status `Seccomp: 2`) and `keyctl`, which the profile
    leaves out, fails with EPERM. Unconfined, the same container has no filter."""
    probe = (
        "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); "
        "code = libc.syscall(250, 0, -3, 0); errno = ctypes.get_errno(); "  # keyctl(GET_KEYRING_ID, session)
        "mode = [line.split()[1] for line in open('/proc/self/status') if line.startswith('Seccomp:')][0]; "
        "sys.stderr.write(f'seccomp={mode} keyctl={code} errno={errno}\\n')"
    )
    chart = as_the_chart_runs_it("python", "-c", probe)
    filtered = images.run_once(controller_image, chart, "seccomp-" + tmp_path.name[-8:], tmp_path)
    assert filtered.code == 0 and "seccomp=2 keyctl=-1 errno=1" in filtered.output, filtered
    unconfined = replace(chart, seccomp="Unconfined")
    ended = images.run_once(controller_image, unconfined, "unconfined-" + tmp_path.name[-8:], tmp_path)
    assert ended.code == 0 and "seccomp=0 " in ended.output and "errno=1\n" not in ended.output, ended


def test_dev_shm_is_a_64_mib_tmpfs(controller_image, tmp_path):
    probe = "import shutil; print(shutil.disk_usage('/dev/shm').total // 2**20)"
    code, output, _ = images.run_once(
        controller_image, Container(command=("python", "-c", probe)), "shm-" + tmp_path.name[-8:], tmp_path
    )
    assert (code, output) == (0, "64\n")


def test_commands_that_run_the_trainer_say_what_to_install_and_write_nothing(controller_image, tmp_path):
    """In the controller image, `sobertctl data prepare` and a local submit need the trainer: each
    stops at once, naming the package to install, before anything is written."""
    commands = {
        "data": [
            "data",
            "prepare",
            "--posts",
            "/fixtures/example.stackexchange.com-Posts.xml",
            "--out",
            "/tmp/data/data",
            "--vocab-size",
            "600",
        ],
        "local": [
            "submit",
            "tiny",
            "--storage",
            "/tmp/data/local",
            "--posts",
            "/fixtures/example.stackexchange.com-Posts.xml",
        ],
    }
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    for name, args in commands.items():
        container = as_the_chart_runs_it(
            "sobertctl",
            *args,
            mounts=(Mount("/fixtures", str(DUMP), read_only=True), Mount("/tmp/data", str(out))),
        )
        code, output, _ = images.run_once(controller_image, container, f"{name}-" + tmp_path.name[-8:], tmp_path)
        assert code == 1, (name, output)
        assert "sobert-trainer" in output and "not installed" in output, (name, output)
        assert not (out / name).exists(), name
