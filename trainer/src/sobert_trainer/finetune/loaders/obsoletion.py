"""Obsoletion: is an answer out of date? Weak labels from comments, or a labelled CSV.

No labelled set is public (the SOBert paper's was not released). The weak labeller reads a Stack
Exchange dump: an answer is `obsolete` when one of its comments matches a rule below (and no
negation precedes the match in the same clause), `current` when it has comments and none
matches. Answers without comments get no label: silence is not evidence. The rules, their hits
and their precision on a hand-checked sample are in OBSOLETION.md beside this file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sobert_trainer.data.dump import RowStats, iter_comments, iter_posts
from sobert_trainer.data.html_text import html_to_segments
from sobert_trainer.finetune.examples import LoadResult, TextExample
from sobert_trainer.finetune.loaders.common import check_label, csv_records

OBSOLETION_LABELS = ("current", "obsolete")


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    rationale: str


def _rule(name: str, pattern: str, rationale: str) -> Rule:
    return Rule(name, re.compile(pattern, re.IGNORECASE), rationale)


RULES: tuple[Rule, ...] = (
    _rule("deprecated", r"\bdeprecated\b", "an API or tool the answer relies on was deprecated"),
    _rule(
        "no-longer",
        r"\bno longer\s+(works?|working|valid|available|supported|maintained|under development|exists?|possible)\b",
        "the method, API or tool stopped working or being maintained",
    ),
    _rule(
        "not-anymore",
        r"\b(doesn'?t|does not|don'?t|do not|won'?t|isn'?t|is not|aren'?t|are not)\s+"
        r"(work|working|exist|supported|available|valid)\b[^.;!?]{0,30}\bany ?more\b",
        "explicit 'does not work anymore'",
    ),
    _rule(
        "newer-versions",
        r"\b(doesn'?t|does not|no longer|won'?t|not)\s+work\b[^.;!?]{0,20}\b(latest|newer|recent|current)\b"
        r"[^.;!?]{0,15}\b(versions?|releases?)\b",
        "fails on newer releases of the platform",
    ),
    _rule(
        "outdated",
        r"\b(this|that|it|answer|solution|method|approach|api|link|code)\s+(is|are|seems?|looks?|became|is now)\s+"
        r"(now\s+)?(outdated|out of date|obsolete)\b",
        "the commenter calls the answer (or its method) outdated",
    ),
    _rule(
        "removed-in-version",
        r"\b(removed|dropped|gone)\b[^.;!?]{0,30}\b(in|since|as of|from)\s+([a-z][\w.]*\s+)?(version\s+|v)?\d",
        "the feature was removed in a named release",
    ),
    _rule(
        "as-of-version",
        r"\bas of\s+(version\s+|v)?\d[\w.]*\b[^.;!?]{0,60}\b(use|instead|changed|replaced|no longer)\b",
        "'as of version X' followed by what to use instead",
    ),
)
_NEGATION = re.compile(r"\b(not|isn'?t|aren'?t|never|no)\s+(\w+\s+){0,2}$", re.IGNORECASE)


def matching_rules(comment: str) -> list[str]:
    """Names of the rules a comment fires (a negation just before the match cancels it)."""
    fired = []
    for rule in RULES:
        for match in rule.pattern.finditer(comment):
            clause = re.split(r"[.;!?]", comment[: match.start()])[-1]
            if rule.name == "deprecated" and _NEGATION.search(clause):
                continue
            fired.append(rule.name)
            break
    return fired


def label_obsoletion(posts_uri: str, comments_uri: str, endpoint_url: str | None = None) -> LoadResult:
    """Weak labels for the answers of a dump; `skipped` counts answers without comments and rule hits."""
    comments: dict[str, list[str]] = {}
    for row in iter_comments(comments_uri, RowStats(), endpoint_url):
        if row.get("PostId") and row.get("Text"):
            comments.setdefault(row["PostId"], []).append(row["Text"])
    result = LoadResult()
    hits: Counter[str] = Counter()
    for post in iter_posts(posts_uri, RowStats(), endpoint_url):
        if post.get("PostTypeId") != "2":
            continue
        said = comments.get(post.get("Id", ""))
        if not said:
            hits["answers without comments"] += 1
            continue
        text = "\n".join(html_to_segments(post.get("Body", "")))
        if not text.strip():
            hits["empty text"] += 1
            continue
        fired = [name for comment in said for name in matching_rules(comment)]
        hits.update(f"rule {name}" for name in fired)
        result.examples.append(TextExample(post["Id"], text, "obsolete" if fired else "current"))
    result.skipped = dict(hits)
    return result


def load_labelled_csv(path: str | Path, encoding: str = "utf-8") -> LoadResult:
    """User labels: `post_id,text,label`, label current|obsolete (or 0|1)."""
    result = LoadResult()
    aliases = {"0": "current", "1": "obsolete"}
    allowed = (*OBSOLETION_LABELS, *aliases)
    for line, row in csv_records(path, encoding, ("post_id", "text", "label")):
        label = check_label(path, line, "label", row["label"].strip().lower(), allowed)
        if not row["text"].strip():
            result.skipped["empty text"] = result.skipped.get("empty text", 0) + 1
            continue
        result.examples.append(TextExample(row["post_id"].strip(), row["text"].strip(), aliases.get(label, label)))
    return result
