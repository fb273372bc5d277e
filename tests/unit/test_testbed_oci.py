"""The OCI runtime spec the testbed gives runc: image configuration and pod spec combined as
containerd's CRI plugin combines them (containerd v1.7.27 pkg/cri/opts/spec.go, spec_linux.go;
pkg/oci/spec.go, spec_opts.go). Each case is one of containerd's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sobert_testbed.images import normalize
from sobert_testbed.oci import (
    DEFAULT_CAPABILITIES,
    SHM_DEFAULT_BYTES,
    Container,
    ImageConfig,
    Mount,
    capabilities,
    process_args,
    process_env,
    process_user,
    runtime_spec,
    with_seccomp,
)

CONTROLLER = ImageConfig(
    user="10001:10001",
    env=("PATH=/opt/venv/bin:/usr/bin", "HOME=/tmp"),
    entrypoint=("kopf", "run", "--standalone"),
    cmd=("-m", "sobert_operator.controller.main"),
)


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ((), (), ["kopf", "run", "--standalone", "-m", "sobert_operator.controller.main"]),  # ENTRYPOINT + CMD
        (
            (),
            ("--namespace=ns", "-m", "m"),
            ["kopf", "run", "--standalone", "--namespace=ns", "-m", "m"],
        ),  # args replace CMD
        (("python", "-c", "1"), (), ["python", "-c", "1"]),  # command replaces ENTRYPOINT and drops CMD
        (("python",), ("-V",), ["python", "-V"]),
    ],
)
def test_command_and_args_over_entrypoint_and_cmd(command, args, expected):
    assert process_args(CONTROLLER, command, args) == expected


def test_an_empty_entrypoint_string_means_none_and_nothing_at_all_is_an_error():
    image = ImageConfig(entrypoint=("",), cmd=("sh",))
    assert process_args(image, (), ()) == ["sh"]
    with pytest.raises(ValueError, match="no command"):
        process_args(ImageConfig(), (), ())


def test_the_pods_env_replaces_the_images_and_keeps_the_rest():
    env = process_env(CONTROLLER, (("HOME", "/home/x"), ("A", "1")))
    assert env == ["PATH=/opt/venv/bin:/usr/bin", "HOME=/home/x", "A=1"]


@pytest.fixture
def rootfs(tmp_path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nsobert:x:10001:10001::/home/sobert:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nsobert:x:10001:\nvideo:x:44:sobert\n")
    return tmp_path


def test_the_user_from_the_image_or_the_security_context(rootfs):
    assert process_user(CONTROLLER, Container(), rootfs) == {"uid": 10001, "gid": 10001, "additionalGids": [44, 10001]}
    named = ImageConfig(user="sobert")
    assert process_user(named, Container(), rootfs)["gid"] == 10001  # from passwd
    assert process_user(ImageConfig(), Container(), rootfs) == {"uid": 0, "gid": 0, "additionalGids": [0]}
    pod = Container(run_as_user=10001, run_as_group=3000, supplemental_groups=(2000,))
    assert process_user(ImageConfig(), pod, rootfs) == {"uid": 10001, "gid": 3000, "additionalGids": [44, 2000, 3000]}
    unknown = Container(run_as_user=4242)  # not in passwd: gid 0
    assert process_user(ImageConfig(), unknown, rootfs) == {"uid": 4242, "gid": 0, "additionalGids": [0]}
    with pytest.raises(ValueError, match="no user 'nobody'"):
        process_user(ImageConfig(user="nobody"), Container(), rootfs)


def test_capabilities_drop_all_and_add():
    assert capabilities((), ()) == sorted(DEFAULT_CAPABILITIES)
    assert capabilities((), ("ALL",)) == []
    assert capabilities(("NET_BIND_SERVICE",), ("ALL",)) == ["CAP_NET_BIND_SERVICE"]
    assert "CAP_NET_RAW" not in capabilities((), ("NET_RAW",))


def test_the_runtime_spec(rootfs):
    container = Container(
        args=("--namespace=ns",),
        read_only_root=True,
        allow_privilege_escalation=False,
        capabilities_drop=("ALL",),
        mounts=(Mount("/tmp"), Mount("/etc/sobert", "/host/cm", read_only=True), Mount("/etc", "/host/etc")),
        memory_limit_bytes=256 * 2**20,
        network_namespace="/var/run/netns/pod",
        hostname="pod-0",
        cgroups_path="/sobert-testbed/pod/c",
    )
    spec = runtime_spec(rootfs, CONTROLLER, container)
    process = spec["process"]
    assert process["args"] == ["kopf", "run", "--standalone", "--namespace=ns"]
    assert process["user"]["uid"] == 10001 and process["cwd"] == "/"
    assert process["noNewPrivileges"] is True and process["capabilities"]["bounding"] == []
    assert spec["root"] == {"path": str(rootfs), "readonly": True}
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.index("/etc") < destinations.index("/etc/sobert")  # parents first
    shm = next(m for m in spec["mounts"] if m["destination"] == "/dev/shm")
    assert f"size={SHM_DEFAULT_BYTES}" in shm["options"]
    assert {"type": "network", "path": "/var/run/netns/pod"} in spec["linux"]["namespaces"]
    assert spec["linux"]["cgroupsPath"] == "/sobert-testbed/pod/c/runc"  # the limit is on its parent
    assert "resources" not in spec["linux"]


def test_a_memory_volume_at_dev_shm_replaces_the_default(rootfs):
    shm = Mount("/dev/shm", size_bytes=2 * 2**30)
    spec = runtime_spec(rootfs, CONTROLLER, Container(mounts=(shm,)))
    at_shm = [m for m in spec["mounts"] if m["destination"] == "/dev/shm"]
    assert len(at_shm) == 1 and f"size={2 * 2**30}" in at_shm[0]["options"]
    default = runtime_spec(rootfs, CONTROLLER, Container())
    assert "network" not in [n["type"] for n in default["linux"]["namespaces"]]  # the host's network
    assert default["process"]["noNewPrivileges"] is False  # allowPrivilegeEscalation unset


@pytest.mark.parametrize(
    ("reference", "normalized"),
    [
        ("alpine:3.10", "docker.io/library/alpine:3.10"),
        ("alpine", "docker.io/library/alpine:latest"),
        ("rayproject/ray:2.9.0", "docker.io/rayproject/ray:2.9.0"),
        ("ghcr.io/sobert-dev/sobert-trainer:0.1.0", "ghcr.io/sobert-dev/sobert-trainer:0.1.0"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("nvcr.io/nvidia/pytorch@sha256:ab", "nvcr.io/nvidia/pytorch@sha256:ab"),
    ],
)
def test_image_references_are_normalized_as_the_cri_names_them(reference, normalized):
    assert normalize(reference) == normalized


def test_seccomp_unconfined_or_unset_leaves_the_spec_and_localhost_is_refused():
    """containerd's generateSeccompSpecOpts: no filter for Unconfined or an unset profile; the
    RuntimeDefault filter itself is checked by running it (test_controller_install.py)."""
    spec = {"linux": {"namespaces": []}}
    assert with_seccomp(spec, None) is spec and with_seccomp(spec, "Unconfined") is spec
    with pytest.raises(ValueError, match="Localhost"):
        with_seccomp(spec, "Localhost")
