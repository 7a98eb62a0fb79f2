"""Classification metrics (scikit-learn), the same for validation during training and for the test split."""

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over all classes (a class never predicted has precision 0)."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=list(range(num_classes)), average="macro", zero_division=0
    )
    return {"acc": float((labels == preds).mean()), "precision": float(precision), "recall": float(recall),
            "f1": float(f1)}


def per_class_metrics(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    """Per-class precision, recall and support, and the confusion matrix (rows = true class)."""
    ids = list(range(len(classes)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, preds, labels=ids, average=None, zero_division=0
    )
    return {
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(classes, precision, recall, support)
        },
        "confusion": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def confusion_records(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> list[dict[str, str]]:
    """One {"actual", "predicted"} record per image: the input of DVC's ``confusion`` plot template."""
    return [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(labels.tolist(), preds.tolist())]
