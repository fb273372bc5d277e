"""Obsoletion: is an answer out of date? Weak labels from its comments, or a labelled CSV.

No labelled set is public (the SOBert paper's was not released). The weak labeller reads a
Stack Exchange dump: an answer (PostTypeId 2) is `obsolete` when one of its comments fires a
rule in `RULES`, `current` when it has comments and none fires. Answers without comments get no
label: silence is not evidence, and most answers are never commented on. A rule marked
`negatable` does not fire when a negation ("not", "isn't", "never", ...) stands within two words
before the match in the same clause ("this is not deprecated"). The rules' hits and their
precision on a hand-checked sample of real comments are in OBSOLETION.md beside this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sobert_api.task_files import obsoletion_records, read_text
from sobert_trainer.data.dump import RowStats, iter_comments, iter_posts
from sobert_trainer.data.html_text import html_to_segments
from sobert_trainer.finetune.examples import LoadResult, TextExample


@dataclass(frozen=True)
class Rule:
    """A named comment pattern that says the commented answer is out of date."""

    name: str
    pattern: re.Pattern[str]
    rationale: str
    negatable: bool = False


def _rule(name: str, pattern: str, rationale: str, negatable: bool = False) -> Rule:
    return Rule(name, re.compile(pattern, re.IGNORECASE), rationale, negatable)


_NOT = r"(?:\w+n['\u2019]t|not|cannot|doesnt|dont|isnt|wont|cant|arent)"  # apostrophe needed: "current" is no "n't"
_NOT_YEAR = r"(?!(?:19|20)\d\d\b)"  # "since 2010" is a date, not a release
_NOT_NAME = (
    r"(?!(?:the|a|an|about|last|first|only|just|over|under|around|my|your|line|lines|step|row|page|"
    r"option|answer|comment|post|edit|places?|days?|minutes?|seconds?)\s)"
)  # "removed it from line 2" is no release
_RELEASE = (  # "version 3", "v3", "3.0", or a name and a number ("Python 3", "jQuery 1.9")
    rf"(?:version\s+{_NOT_YEAR}\d|v\.?\s*\d|\d+\.\d|{_NOT_NAME}[a-z][\w.+#-]*\s+{_NOT_YEAR}\d)"
)
RULES: tuple[Rule, ...] = (
    _rule("deprecated", r"\bdeprecated\b", "an API or tool the answer relies on was deprecated", negatable=True),
    _rule(
        "no-longer",
        r"\bno longer\s+(?:works?|working|valid|available|supported|maintained|under development|exists?|"
        r"possible|needed|necessary|required|the case|true|correct|accurate|applies|relevant)\b",
        "what the answer says stopped working, being maintained, or being true",
    ),
    _rule(
        "not-anymore",
        rf"\b{_NOT}\s+(?:\w+\s+){{0,2}}?(?:work|working|exist|supported|available|valid|maintained|compile)\b"
        r"[^.;!?]{0,30}?\bany ?more\b",
        "explicit 'does not work / is not supported anymore'",
    ),
    _rule(
        "newer-versions",
        rf"\b(?:{_NOT}|no longer)\s+(?:\w+\s+){{0,2}}?work\w*\b[^.;!?]{{0,20}}?\b(?:latest|newer|recent|current|new)\b"
        r"[^.;!?]{0,15}?\b(?:versions?|releases?)\b",
        "fails on newer releases of the platform",
    ),
    _rule(
        "outdated",
        r"(?:^\s*|\b(?:this|that|it|answer|solution|method|approach|api|link|code|info|information)"
        r"(?:\s+(?:is|are|seems?|looks?|became|has become)|['\u2019]s)\s+)"
        r"(?:now\s+|a bit\s+|quite\s+|very\s+|totally\s+|completely\s+)?(?:outdated|out of date|obsolete)\b",
        "the commenter calls the answer (or what it uses) outdated; 'obsolete' about anything else does not count",
        negatable=True,
    ),
    _rule(
        "removed-in-version",
        rf"\b(?:removed|dropped|gone)\b[^.;!?]{{0,30}}?\b(?:in|since|as of|from|with)\s+{_RELEASE}",
        "the feature was removed in a named release",
        negatable=True,
    ),
    _rule(
        "since-version",
        rf"\b(?:since|as of|starting with|starting from)\s+{_RELEASE}[\w.]*\b[^.;!?]{{0,60}}?"
        r"\b(?:removed|deprecated|dropped|no longer|replaced|instead|changed)\b",
        "'since / as of version X' followed by what changed or what to use instead",
    ),
)
_NEGATION = re.compile(
    r"\b(?:not|never|no|\w+n['\u2019]t|isnt|arent|wasnt|werent|hasnt|havent)\s+(?:\w+\s+){0,2}$", re.I
)


def matching_rules(comment: str) -> list[str]:
    """Names of the rules a comment fires, in `RULES` order."""
    fired = []
    for rule in RULES:
        for match in rule.pattern.finditer(comment):
            clause = re.split(r"[.;!?]", comment[: match.start()])[-1]
            if rule.negatable and _NEGATION.search(clause):
                continue
            fired.append(rule.name)
            break
    return fired


def rule_hits(comments_uri: str, endpoint_url: str | None = None) -> dict[str, int]:
    """For each rule (all listed, in `RULES` order): how many comments of a Comments.xml it fires on."""
    hits = dict.fromkeys((rule.name for rule in RULES), 0)
    for row in iter_comments(comments_uri, RowStats(), endpoint_url):
        for name in matching_rules(row.get("Text", "")):
            hits[name] += 1
    return hits


def label_obsoletion(posts_uri: str, comments_uri: str, endpoint_url: str | None = None) -> LoadResult[TextExample]:
    """Weak labels for the commented answers of a dump (text: the answer body as plain text; id: post Id).

    Only the rule names per post are kept from the comments pass, not the comment texts.
    """
    comment_stats, post_stats = RowStats(), RowStats()
    fired: dict[str, list[str]] = {}  # post id -> rule names fired by its comments ([] if none)
    for row in iter_comments(comments_uri, comment_stats, endpoint_url):
        if row.get("PostId"):
            fired.setdefault(row["PostId"], []).extend(matching_rules(row.get("Text", "")))
    result: LoadResult[TextExample] = LoadResult()
    for post in iter_posts(posts_uri, post_stats, endpoint_url):
        if post.get("PostTypeId") != "2":
            continue
        if post.get("Id") not in fired:
            result.skip("answers without comments")
            continue
        text = "\n".join(html_to_segments(post.get("Body", "")))
        if not text.strip():
            result.skip("empty text")
            continue
        result.examples.append(TextExample(post["Id"], text, "obsolete" if fired[post["Id"]] else "current"))
    for what, stats in (("post", post_stats), ("comment", comment_stats)):
        if stats.bad_total:
            result.skipped[f"bad {what} rows"] = stats.bad_total
    return result


def load_labelled_csv(path: str | Path, encoding: str = "utf-8") -> LoadResult[TextExample]:
    """User labels: CSV `post_id,text,label`; label `current` / `obsolete` (any case) or `0` / `1`."""
    result: LoadResult[TextExample] = LoadResult()
    for _, row, label in obsoletion_records(read_text(path, encoding), str(path)):
        if not row["text"].strip():
            result.skip("empty text")
            continue
        result.examples.append(TextExample(row["post_id"].strip(), row["text"].strip(), label))
    return result
