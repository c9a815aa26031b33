"""Routing-signature domain classifier: which domain did a prompt (or a window of it) come from,
judged only by how often each expert of each layer was picked?

Features: per-layer expert shares of a sample, square-rooted (Hellinger), standardised on training data.
Model: multinomial logistic regression with an L2 penalty, fitted with scipy L-BFGS (no sklearn).
Cross-validation is grouped by prompt: windows of one prompt never sit in train and test at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from moeprint.errors import MoeprintError


def signature_features(counts: np.ndarray) -> np.ndarray:
    """(N, L, E) expert counts -> (N, L*E) square-rooted per-layer shares."""
    total = counts.sum(axis=-1, keepdims=True).astype(np.float64)
    share = np.divide(counts, total, out=np.zeros(counts.shape, np.float64), where=total > 0)
    return np.sqrt(share).reshape(len(counts), -1)


@dataclass
class SignatureClassifier:
    classes: list[str]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (F, C)
    bias: np.ndarray  # (C,)
    l2: float

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        return softmax(z @ self.weights + self.bias, axis=1)

    def predict(self, features: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(features).argmax(axis=1)]

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias.tolist(),
            "l2": self.l2,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SignatureClassifier:
        return cls(
            list(obj["classes"]),
            np.asarray(obj["mean"]),
            np.asarray(obj["scale"]),
            np.asarray(obj["weights"]),
            np.asarray(obj["bias"]),
            float(obj["l2"]),
        )


def fit(features: np.ndarray, labels: list[str], l2: float = 1.0) -> SignatureClassifier:
    """Multinomial logistic regression: minimise mean cross-entropy + l2/2N * ||W||^2."""
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise MoeprintError("the classifier needs samples of at least two domains.")
    y = np.array([classes.index(l) for l in labels])
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    x = (features - mean) / scale  # (N, F)
    n, f = x.shape
    c = len(classes)
    onehot = np.eye(c)[y]  # (N, C)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: f * c].reshape(f, c), theta[f * c :]
        logp = log_softmax(x @ w + b, axis=1)
        value = -(onehot * logp).sum() / n + 0.5 * l2 / n * (w * w).sum()
        grad_logits = (np.exp(logp) - onehot) / n  # (N, C)
        gw = x.T @ grad_logits + l2 / n * w
        return value, np.concatenate([gw.ravel(), grad_logits.sum(axis=0)])

    res = minimize(loss, np.zeros(f * c + c), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return SignatureClassifier(classes, mean, scale, res.x[: f * c].reshape(f, c), res.x[f * c :], l2)


def grouped_folds(labels: list[str], groups: list[str], n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each sample: whole groups (prompts) dealt round-robin per class after shuffling."""
    group_label: dict[str, str] = {}
    for g, l in zip(groups, labels):
        group_label.setdefault(g, l)
    fold_of_group: dict[str, int] = {}
    offset = 0
    for cls in sorted(set(group_label.values())):
        members = [g for g, l in group_label.items() if l == cls]
        rng.shuffle(members)
        for i, g in enumerate(members):
            fold_of_group[g] = (i + offset) % n_folds
        offset += len(members)
    return np.array([fold_of_group[g] for g in groups])


def cross_validate(
    features: np.ndarray, labels: list[str], groups: list[str], n_folds: int = 5, l2: float = 1.0, seed: int = 0
) -> dict[str, Any]:
    """Grouped, class-stratified k-fold accuracy with a majority-class and nearest-centroid comparison."""
    rng = np.random.default_rng(seed)
    folds = grouped_folds(labels, groups, n_folds, rng)
    y = np.array(labels, dtype=object)
    predicted = np.empty(len(labels), dtype=object)
    centroid_pred = np.empty(len(labels), dtype=object)
    majority_hits = 0
    for k in range(n_folds):
        test = folds == k
        train = ~test
        if not test.any() or len(set(y[train])) < 2:
            continue
        model = fit(features[train], list(y[train]), l2)
        predicted[test] = model.predict(features[test])
        centroid_pred[test] = nearest_centroid(features[train], list(y[train]), features[test])
        values, counts = np.unique(y[train], return_counts=True)
        majority_hits += int((y[test] == values[counts.argmax()]).sum())
    done = np.array([p is not None for p in predicted])
    classes = sorted(set(labels))
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(y[done], predicted[done]):
        confusion[classes.index(t), classes.index(p)] += 1
    recall = np.divide(
        np.diag(confusion), confusion.sum(axis=1), out=np.zeros(len(classes)), where=confusion.sum(axis=1) > 0
    )
    return {
        "n_samples": int(done.sum()),
        "n_groups": len(set(groups)),
        "n_folds": n_folds,
        "l2": l2,
        "accuracy": float((predicted[done] == y[done]).mean()) if done.any() else None,
        "balanced_accuracy": float(recall[confusion.sum(axis=1) > 0].mean()) if done.any() else None,
        "nearest_centroid_accuracy": float((centroid_pred[done] == y[done]).mean()) if done.any() else None,
        "majority_baseline_accuracy": majority_hits / max(int(done.sum()), 1),
        "classes": classes,
        "per_class_recall": dict(zip(classes, recall.tolist())),
        "samples_per_class": dict(zip(classes, confusion.sum(axis=1).tolist())),
        "confusion": confusion.tolist(),
    }


def nearest_centroid(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray) -> list[str]:
    """Cosine nearest class mean: the simplest signature classifier, a sanity bound for the logistic one."""
    classes = sorted(set(train_y))
    y = np.array(train_y, dtype=object)
    centroids = np.stack([train_x[y == c].mean(axis=0) for c in classes])
    cn = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    tn = test_x / np.maximum(np.linalg.norm(test_x, axis=1, keepdims=True), 1e-12)
    return [classes[i] for i in (tn @ cn.T).argmax(axis=1)]
