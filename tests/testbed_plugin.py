"""The pytest side of the testbed (the `sobert_testbed` package): its servers as fixtures, and its
missing prerequisites as skips, or as failures under CI, where everything must be present."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

import pytest

from sobert_testbed import MissingPrerequisiteError
from sobert_testbed import s3 as s3server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_images  # noqa: E402  (scripts/ is not a package)

IN_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    """A fixture that cannot start its part of the testbed skips the test, except under CI."""
    try:
        return (yield)
    except MissingPrerequisiteError as exc:
        if IN_CI:
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole session."""
    server = s3server.start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        s3server.stop(server)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket; the process environment carries the server's credentials."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    name = "sobert-" + secrets.token_hex(4)
    s3_server.client().create_bucket(Bucket=name)
    return name


IMAGE_FIXTURES = ("controller_image", "trainer_image", "workload_images")


def pytest_collection_finish(session):
    """Build the images the selected tests use before the first test starts: a cold build takes
    minutes, which belong to no test's timeout. A failure here is left to the fixture, which
    builds again (cached where it got to) and reports it in its test."""
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ()) if name in IMAGE_FIXTURES}
    if not needed:
        return
    names = ["controller"] + (["trainer"] if needed - {"controller_image"} else [])
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            try:
                build_images.build(name, Path(workdir))
            except Exception:  # reported by the fixture
                return


@pytest.fixture(scope="session")
def controller_image(tmp_path_factory) -> str:
    """The controller image, built from operator/Dockerfile under the name the chart deploys
    (`image.repository:image.tag` in charts/sobert/values.yaml; scripts/build_images.py)."""
    return build_images.build("controller", tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def trainer_image(tmp_path_factory) -> str:
    """The trainer image, built from trainer/Dockerfile on the NGC stand-in, under the name the
    chart's pods run (`cluster.trainerImage` in charts/sobert/values.yaml)."""
    return build_images.build("trainer", tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def workload_images(controller_image, trainer_image) -> tuple[str, ...]:
    """The project's images, which the cluster tier's pods run (the Training Operator's init
    container is still emulated, docs/testbed.md)."""
    return controller_image, trainer_image
