"""Evaluation metrics: accuracy, macro-F1 and confusion matrix; entity-level P/R/F1 for NER.

Pure functions over label strings, so the same code scores a Ray worker's validation pass,
`sobertctl eval` and the unit tests. Entity scoring is exact span match (type, start, end), as
in the CoNLL evaluation script and seqeval's default mode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def classification_metrics(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix (rows: gold)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g]][index[p]] += 1
    per_class = {}
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        predicted_i = sum(row[i] for row in matrix)
        gold_i = sum(matrix[i])
        per_class[label] = _prf(tp, predicted_i, gold_i) | {"support": gold_i}
    # Macro-F1 over the classes present in gold or predictions (sklearn's behaviour with labels
    # given explicitly counts absent classes as 0; a tiny validation slice would then be
    # dominated by classes it never contains).
    present = [label for label in labels if per_class[label]["support"] or sum(r[index[label]] for r in matrix)]
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {
        "examples": len(gold),
        "accuracy": correct / len(gold) if gold else 0.0,
        "macro_f1": sum(per_class[label]["f1"] for label in present) / len(present) if present else 0.0,
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": matrix,
    }


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end-exclusive) of a BIO sequence.

    An I- tag that does not continue an entity of its type starts a new one (the conlleval
    convention), so a model's ill-formed output is scored rather than dropped.
    """
    spans: set[tuple[str, int, int]] = set()
    kind: str | None = None
    start = 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, entity = tag.partition("-")
        continues = prefix == "I" and entity == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = entity, i
    return spans


def entity_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/F1 over exact entity spans, plus per-type figures."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    true_pos: Counter[str] = Counter()
    gold_count: Counter[str] = Counter()
    pred_count: Counter[str] = Counter()
    tokens = correct_tokens = 0
    for g_tags, p_tags in zip(gold, predicted, strict=True):
        if len(g_tags) != len(p_tags):
            raise ValueError(f"sentence of {len(g_tags)} tokens has {len(p_tags)} predicted tags")
        g_spans, p_spans = bio_spans(g_tags), bio_spans(p_tags)
        gold_count.update(span[0] for span in g_spans)
        pred_count.update(span[0] for span in p_spans)
        true_pos.update(span[0] for span in g_spans & p_spans)
        tokens += len(g_tags)
        correct_tokens += sum(a == b for a, b in zip(g_tags, p_tags, strict=True))
    overall = _prf(sum(true_pos.values()), sum(pred_count.values()), sum(gold_count.values()))
    types = sorted(set(gold_count) | set(pred_count))
    return {
        "sentences": len(gold),
        **overall,
        "token_accuracy": correct_tokens / tokens if tokens else 0.0,
        "per_type": {t: _prf(true_pos[t], pred_count[t], gold_count[t]) | {"support": gold_count[t]} for t in types},
    }


def _prf(true_positive: int, predicted: int, gold: int) -> dict[str, float]:
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
