"""The project's two images, built into the local buildah store as the tests build them: the
controller from operator/Dockerfile and the trainer from trainer/Dockerfile, each on the testbed's
stand-in for its upstream base, tagged with the names the Helm chart deploys
(`image.repository:image.tag` and `cluster.trainerImage` in charts/sobert/values.yaml).

`make images` runs it; `make dev-cluster` does first, so the cluster tier's pods run from the
images (docs/testbed.md). Cached by inputs: an unchanged checkout rebuilds nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import yaml

from sobert_testbed import images

ROOT = Path(__file__).resolve().parents[1]


class ProjectImage(NamedTuple):
    dockerfile: str  # relative to the checkout
    tag: str  # the name the chart deploys
    base: images.StandIn  # the stand-in for the Dockerfile's upstream base


def project_images(checkout: Path = ROOT) -> dict[str, ProjectImage]:
    """The controller and trainer images by name, tagged from the chart's default values."""
    values = yaml.safe_load((checkout / "charts" / "sobert" / "values.yaml").read_text())
    return {
        "controller": ProjectImage(
            "operator/Dockerfile", f"{values['image']['repository']}:{values['image']['tag']}", images.PYTHON_SLIM
        ),
        "trainer": ProjectImage("trainer/Dockerfile", values["cluster"]["trainerImage"], images.NGC_PYTORCH),
    }


def build(name: str, workdir: Path, checkout: Path = ROOT) -> str:
    """Build one of `project_images` (its stand-in base first, where its recipe changed); its tag."""
    image = project_images(checkout)[name]
    return images.project_image(checkout, image.dockerfile, image.tag, image.base, workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = project_images()
    parser.add_argument("names", nargs="*", help=f"Which of {', '.join(known)} (default: all).")
    args = parser.parse_args(argv)
    if unknown := [name for name in args.names if name not in known]:
        parser.error(f"unknown image {', '.join(unknown)}: expected one of {', '.join(known)}")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.names or list(known):
            print(f"{name}: {build(name, Path(workdir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
