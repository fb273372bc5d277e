"""What the CLI prints for machines: YAML that a reader or another tool takes as it is."""

from __future__ import annotations

from typing import Any

import yaml


class _PlainDumper(yaml.SafeDumper):
    """Every object written out where it appears: no `&id001` anchors and `*id001` aliases for the
    parts two manifests share (a PyTorchJob's Master and Worker templates), which kubectl reads
    but people and many tools do not."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def plain_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False)


def plain_yaml_all(documents: list[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False)
