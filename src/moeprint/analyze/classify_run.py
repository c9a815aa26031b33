"""`moeprint classify`: train the routing-signature classifier on one run, cross-validate it, apply it to another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moeprint.analyze.classify import SignatureClassifier, cross_validate, fit, signature_features
from moeprint.analyze.pipeline import check_segment
from moeprint.analyze.runio import scan_run, scan_token_bags
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_write_json
from moeprint.io.run import open_run


def _samples(run_path: str | Path, segment: str, window: int | None, progress: bool, group_by: str = "prompt"):
    run = open_run(run_path)
    manifest = run.manifest()
    scan = scan_run(run, manifest, check_segment(segment), progress=progress, with_coactivation=False, window=window)
    prompts = scan.prompts
    min_tokens = max(1, (window or 2) // 2)
    keep = prompts.n_tokens >= min_tokens  # drop stub windows (a prompt's last few tokens)
    ids = [p for p, k in zip(prompts.prompt_ids, keep) if k]
    if not ids:
        raise MoeprintError(f"{run.root} has no tokens in segment {segment!r} to classify; choose another --segment.")
    groups = [p.split("#w")[0] for p in ids]
    if group_by == "folder":  # imported prompt ids are dataset/category/combo: keep a category on one side
        groups = [g.rsplit("/", 1)[0] for g in groups]
    labels = [d for d, k in zip(prompts.prompt_domains, keep) if k]
    return manifest, signature_features(prompts.counts[keep]), labels, groups, ids


def _token_mix_features(
    run_path: str | Path, segment: str, window: int | None, ids: list[str], vocab_size: int
) -> np.ndarray:
    """Square-rooted shares of the most frequent tokens per sample, rows aligned with `ids`."""
    run = open_run(run_path)
    unit_ids, bags = scan_token_bags(run, run.manifest(), check_segment(segment), window, vocab_size)
    row = {u: i for i, u in enumerate(unit_ids)}
    counts = bags[[row[i] for i in ids]].astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    return np.sqrt(np.divide(counts, total, out=np.zeros_like(counts), where=total > 0))


def classify_runs(
    train_run: str | Path,
    apply_run: str | Path | None = None,
    segment: str = "generated",
    window: int | None = None,
    folds: int = 5,
    l2: float = 1.0,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    group_by: str = "prompt",
    token_baseline: int = 1000,
) -> dict[str, Any]:
    """Cross-validate on `train_run`, fit on all of it, optionally predict `apply_run`; write report + model."""
    if window is not None and window < 2:
        raise MoeprintError(f"--window must be at least 2 tokens; got {window}.")
    if folds < 2:
        raise MoeprintError(f"--folds must be at least 2; got {folds}.")
    if group_by not in ("prompt", "folder"):
        raise MoeprintError(f"--group-by must be prompt or folder; got {group_by!r}.")
    if not l2 >= 0:
        raise MoeprintError(f"--l2 must be >= 0; got {l2}.")
    if token_baseline < 0:
        raise MoeprintError(f"--token-baseline must be >= 0 (0 = skip); got {token_baseline}.")
    if apply_run is not None:  # before any work or write: the apply run must fit the classifier's shape
        trained, applied = open_run(train_run).manifest(), open_run(apply_run).manifest()
        if (applied.num_layers, applied.num_experts) != (trained.num_layers, trained.num_experts):
            raise MoeprintError(
                f"{apply_run} has {applied.num_layers} layers x {applied.num_experts} experts; "
                f"the classifier would be trained on {trained.num_layers} x {trained.num_experts}."
            )
    manifest, x, labels, groups, sample_ids = _samples(train_run, segment, window, progress, group_by)
    if len(set(labels)) < 2:
        raise MoeprintError(f"{train_run} has samples of fewer than two domains in segment {segment!r}.")
    if folds > len(set(groups)):
        raise MoeprintError(
            f"--folds {folds} exceeds the {len(set(groups))} {group_by} groups of {train_run}; "
            "every fold needs at least one group."
        )
    report: dict[str, Any] = {
        "train_run": str(train_run),
        "segment": segment,
        "window": window,
        "unit": f"windows of {window} positions" if window else "whole prompts",
        "cv_groups": group_by,
        "features": "sqrt of per-layer expert shares (L*E), standardised",
        "model": "multinomial logistic regression, L2, scipy L-BFGS",
        "cross_validation": cross_validate(x, labels, groups, folds, l2, seed),
    }
    if token_baseline:
        # the control: the same classifier and folds on WHICH tokens a sample has, not how they were routed
        tx = _token_mix_features(train_run, segment, window, sample_ids, token_baseline)
        report["token_mix_baseline"] = cross_validate(tx, labels, groups, folds, l2, seed) | {
            "features": f"sqrt of shares of the {tx.shape[1]} most frequent tokens"
        }
    model = fit(x, labels, l2)
    out_dir = Path(out) if out else Path(train_run) / "classify"
    shape = {
        "num_layers": manifest.num_layers,
        "num_experts": manifest.num_experts,
        "segment": segment,
        "window": window,
    }
    if apply_run is not None:
        _, ox, olabels, _, oids = _samples(apply_run, segment, window, progress)
        pred = model.predict(ox)
        known = np.array([l in model.classes for l in olabels])
        hits = np.array([p == l for p, l in zip(pred, olabels)])
        report["applied"] = {
            "run": str(apply_run),
            "n_samples": len(pred),
            "accuracy_on_known_domains": float(hits[known].mean()) if known.any() else None,
            "n_unknown_domain_samples": int((~known).sum()),
            "predictions": [{"sample": i, "domain": l, "predicted": p} for i, l, p in zip(oids, olabels, pred)],
        }
    # model first, report last: report.json marks a finished classify folder
    atomic_write_json(out_dir / "model.json", model.to_json() | shape, indent=None)
    atomic_write_json(out_dir / "report.json", report)
    report["out_dir"] = str(out_dir)
    return report


def load_classifier(path: str | Path) -> SignatureClassifier:
    from moeprint.io.atomic import read_json

    return SignatureClassifier.from_json(read_json(path))
