"""Sweep plots (matplotlib, PNG + SVG): one panel per domain, experts kept on x, one line per
criterion (the domain's own selection, scored on the domain's held-out texts), random selection
as the mean of its seeds with a min-max band."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from moeprint.evaluate.results import SweepResult
from moeprint.io.atomic import atomic_path

METRICS = {  # file name: (metric key, y label)
    "retention": ("ppl_ratio", "in-domain perplexity / base"),
    "kl": ("kl", "mean token KL(base || cut), nats"),
}


def _series(result: SweepResult, domain: str, key: str):
    """{criterion: [(n, value)]} for the domain's own cuts; random: {n: [values over seeds]}."""
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    random: dict[int, list[float]] = defaultdict(list)
    for entry in result.cuts:
        cut = entry.cut
        m = entry.text(domain)
        if m is None:
            continue
        if cut.is_random:
            random[cut.n_experts].append(getattr(m, key))
        elif cut.domain == domain:
            lines[cut.criterion].append((cut.n_experts, getattr(m, key)))
    return lines, random


def plot_sweep(result: SweepResult, out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    out_dir = Path(out_dir)
    domains = result.eval_domains() or result.domains
    written = []
    for name, (key, ylabel) in METRICS.items():
        cols = min(len(domains), 4)
        rows = (len(domains) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, sharex=True)
        for ax, domain in zip(axes.flat, domains):
            lines, random = _series(result, domain, key)
            for criterion, points in sorted(lines.items()):
                xs, ys = zip(*sorted(points))
                ax.plot(xs, ys, marker="o", ms=3, label=criterion)
            if random:
                xs = sorted(random)
                mean = [sum(random[x]) / len(random[x]) for x in xs]
                ax.plot(xs, mean, color="grey", ls="--", label=f"random (mean of {max(map(len, random.values()))})")
                ax.fill_between(xs, [min(random[x]) for x in xs], [max(random[x]) for x in xs], color="grey", alpha=0.2)
            values = [y for pts in lines.values() for _, y in pts] + [y for ys in random.values() for y in ys]
            if key == "ppl_ratio" and values and min(values) > 0 and max(values) / min(values) > 20:
                ax.set_yscale("log")  # collapsed cuts sit orders of magnitude above the good ones
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(NullFormatter())
            elif key == "kl" and values and max(values) > 100 * max(min(values), 1e-6):
                ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_title(domain)
            ax.set_xlabel("experts kept per layer")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(domains) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
        model = Path(str(result.base_model))
        model_name = model.parent.name if model.name == "model" else model.name  # the testbed is testbed/model
        fig.suptitle(
            f"{model_name}: {'retention' if name == 'retention' else 'divergence'} "
            f"vs experts kept (of {result.num_experts})"
        )
        fig.tight_layout(rect=(0, 0.08, 1, 0.95))
        for ext in ("png", "svg"):
            with atomic_path(out_dir / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, format=ext, dpi=120)
            written.append(out_dir / f"{name}.{ext}")
        plt.close(fig)
    return written
