"""Plots of stats.json: usage vs token-controlled specialisation per layer, and kept-set overlap (PNG + SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moeprint.types import ALL


def plot_specialisation(stats: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """One panel per domain: TVD excess over the prompt-permutation null, usage vs token-controlled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = [d for d, r in stats["domains"].items() if d != ALL and "usage_prompt_permutation" in r]
    if not domains:
        return []
    cols = min(4, len(domains))
    rows = int(np.ceil(len(domains) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharey=True, squeeze=False)
    for ax, d in zip(axes.flat, domains):
        rec = stats["domains"][d]
        usage = np.array(rec["usage_prompt_permutation"]["tvd_excess"], dtype=float)
        ax.plot(usage, label="usage (token mix included)")
        if "token_controlled" in rec:
            tc = np.array([np.nan if x is None else x for x in rec["token_controlled"]["tvd_excess"]], dtype=float)
            ax.plot(tc, label="same token, by domain")
            sig = np.array(rec["token_controlled"]["q"]) < 0.05
            ax.scatter(np.flatnonzero(sig), tc[sig], s=8, color="C1")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{d} ({rec['n_prompts']} prompts)", fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
    for ax in list(axes.flat)[len(domains) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("TVD minus null mean", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Domain vs rest: excess total-variation distance (dots: token-controlled q < 0.05)", fontsize=10)
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "specialisation.png", out / "specialisation.svg"]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
