"""Metrics against hand-computed values (no torch, no Ray)."""

import pytest

from sobert_trainer.finetune.metrics import bio_spans, classification_metrics, entity_metrics


def test_classification_metrics_by_hand():
    gold = ["HQ", "HQ", "LQ_EDIT", "LQ_CLOSE", "LQ_CLOSE"]
    pred = ["HQ", "LQ_EDIT", "LQ_EDIT", "LQ_CLOSE", "HQ"]
    m = classification_metrics(gold, pred, ["HQ", "LQ_EDIT", "LQ_CLOSE"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # HQ: P 1/2 R 1/2 -> F1 1/2; LQ_EDIT: P 1/2 R 1 -> 2/3; LQ_CLOSE: P 1 R 1/2 -> 2/3
    assert m["per_class"]["LQ_EDIT"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_macro_f1_ignores_classes_absent_from_gold_and_predictions():
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])
    assert m["macro_f1"] == 1.0 and m["per_class"]["c"]["support"] == 0


def test_bio_spans_follow_conlleval():
    tags = ["B-Class", "I-Class", "O", "I-Variable", "I-Variable", "B-Class", "B-Class", "I-Library"]
    assert bio_spans(tags) == {("Class", 0, 2), ("Variable", 3, 5), ("Class", 5, 6), ("Class", 6, 7), ("Library", 7, 8)}


def test_entity_metrics_need_exact_spans():
    gold = [["B-Class", "I-Class", "O", "B-Value"], ["B-Language"]]
    pred = [["B-Class", "O", "O", "B-Value"], ["B-Language"]]  # the Class span is cut short: a miss
    m = entity_metrics(gold, pred)
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert m["per_type"]["Class"]["f1"] == 0.0 and m["per_type"]["Value"]["f1"] == 1.0
    assert m["token_accuracy"] == pytest.approx(4 / 5)


def test_mismatched_lengths_are_errors():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        classification_metrics(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="sentence of 2 tokens has 1 predicted tags"):
        entity_metrics([["O", "O"]], [["O"]])
