"""Helpers shared by the dump / html_text / documents unit tests.

Kept out of tests/conftest.py on purpose: they are plain functions, imported as `dump_helpers`
(pytest puts tests/unit on sys.path for the test modules in it).
"""

from __future__ import annotations

from pathlib import Path

from sobert_trainer.data.dump import RowStats, iter_comments, iter_posts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dump"
SITE = "example.stackexchange.com"
POSTS = FIXTURES / f"{SITE}-Posts.xml"
COMMENTS = FIXTURES / f"{SITE}-Comments.xml"

BOM = b"\xef\xbb\xbf"
DECLARATION = '<?xml version="1.0" encoding="utf-8"?>'


def xml_attr(value: object) -> str:
    """Escape a value the way the Stack Exchange dumps do inside an attribute."""
    text = str(value)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\r", "&#xD;")
        .replace("\n", "&#xA;")
    )


def row(**attrs: object) -> str:
    """One dump line: `  <row A="..." B="..." />` with the attributes escaped."""
    return "  <row " + " ".join(f'{name}="{xml_attr(value)}"' for name, value in attrs.items()) + " />"


def dump_bytes(root: str, lines: list[str | bytes], bom: bool = True, newline: bytes = b"\n") -> bytes:
    """A whole dump file: declaration, root, the given lines (rows or raw junk), closing root."""
    parts: list[bytes] = [DECLARATION.encode(), f"<{root}>".encode()]
    parts += [line if isinstance(line, bytes) else line.encode("utf-8") for line in lines]
    parts.append(f"</{root}>".encode())
    return (BOM if bom else b"") + newline.join(parts) + newline


def write_dump(path: Path, root: str, lines: list[str | bytes], **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_bytes(root, lines, **kwargs))
    return path


def read_posts(path: Path | str) -> tuple[list[dict[str, str]], RowStats]:
    stats = RowStats()
    return list(iter_posts(str(path), stats)), stats


def read_comments(path: Path | str) -> tuple[list[dict[str, str]], RowStats]:
    stats = RowStats()
    return list(iter_comments(str(path), stats)), stats


def html(*paragraphs: str) -> str:
    """A post body made of `<p>` paragraphs, as Stack Exchange stores it."""
    return "".join(f"<p>{p}</p>\n" for p in paragraphs)
