"""The published summaries of an imported expert-fingerprinting run (RUN/published/summaries.parquet).

They cover every published prompt (tens of thousands), not only the one example per file whose
tokens were published, so the site offers them as a second source next to the traces. A summary
row gives, per file, segment, layer and expert, `count_frequency` (share of the file's tokens that
picked the expert) and `prob_density` (mean gate weight), with `num_tokens` a mean per prompt.
Counts are reconstructed as share x num_tokens x sample_count; they are not integers (the published
shares of a layer sum to a little less than top-k), so the page shows them with decimals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moeprint.analyze.aggregate import LayerUsage
from moeprint.errors import MoeprintError
from moeprint.types import ALL

SEGMENTS = ("think", "answer")


def read_published(
    path: Path, num_layers: int, num_experts: int
) -> tuple[dict[str, dict[str, LayerUsage]], dict[str, dict[str, LayerUsage]]]:
    """({domain: {segment: LayerUsage}}, {"domain/category": {segment: LayerUsage}}) with float token counts."""
    try:
        t = pq.read_table(
            path,
            columns=[
                "dataset",
                "category",
                "combo",
                "domain",
                "sample_count",
                "segment",
                "num_tokens",
                "layer",
                "expert",
                "prob_density",
                "count_frequency",
            ],
        )
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise MoeprintError(f"{path} is not a published summaries table ({e}).") from None
    n = pc.multiply(t["num_tokens"], pc.cast(t["sample_count"], pa.float64()))  # tokens of the file's segment
    t = t.append_column("n", n)
    t = t.append_column("cfn", pc.multiply(t["count_frequency"], n))
    t = t.append_column("pdn", pc.multiply(t["prob_density"], n))
    t = t.append_column("group", pc.binary_join_element_wise(t["domain"], t["category"], "/"))
    per_expert = t.group_by(["group", "segment", "layer", "expert"]).aggregate([("cfn", "sum"), ("pdn", "sum")])
    per_file_layer = t.group_by(["dataset", "category", "combo", "group", "segment", "layer"]).aggregate([("n", "max")])
    per_layer = per_file_layer.group_by(["group", "segment", "layer"]).aggregate([("n_max", "sum")])

    groups = sorted(set(per_expert.column("group").to_pylist()))
    gi = {g: i for i, g in enumerate(groups)}
    si = {s: i for i, s in enumerate(SEGMENTS)}
    G, S = len(groups), len(SEGMENTS)
    tokens = np.zeros((G, S, num_layers, num_experts))
    mass = np.zeros((G, S, num_layers, num_experts))
    layer_tokens = np.zeros((G, S, num_layers))

    def idx(table):
        g = np.array([gi[x] for x in table.column("group").to_pylist()])
        s = np.array([si.get(x, -1) for x in table.column("segment").to_pylist()])
        layer = table.column("layer").to_numpy().astype(int)
        if (s < 0).any() or layer.max() >= num_layers:
            raise MoeprintError(f"{path} has segments or layers outside think/answer x {num_layers} layers.")
        return g, s, layer

    g, s, layer = idx(per_expert)
    expert = per_expert.column("expert").to_numpy().astype(int)
    if expert.max() >= num_experts:
        raise MoeprintError(f"{path} names expert {expert.max()}, the run has {num_experts}.")
    np.add.at(tokens, (g, s, layer, expert), per_expert.column("cfn_sum").to_numpy())
    np.add.at(mass, (g, s, layer, expert), per_expert.column("pdn_sum").to_numpy())
    g, s, layer = idx(per_layer)
    np.add.at(layer_tokens, (g, s, layer), per_layer.column("n_max_sum").to_numpy())

    def as_usage(tok: np.ndarray, weight: np.ndarray, per_layer: np.ndarray) -> LayerUsage:
        return LayerUsage(tok, weight, int(round(per_layer[0])) if len(per_layer) else 0, per_layer=per_layer)

    def usage(mask: np.ndarray) -> dict[str, LayerUsage]:
        out = {
            seg: as_usage(tokens[mask, i].sum(0), mass[mask, i].sum(0), layer_tokens[mask, i].sum(0))
            for i, seg in enumerate(SEGMENTS)
            if layer_tokens[mask, i].sum() > 0
        }
        out[ALL] = as_usage(tokens[mask].sum((0, 1)), mass[mask].sum((0, 1)), layer_tokens[mask].sum((0, 1)))
        return out

    domain_of = np.array([g.split("/", 1)[0] for g in groups])
    domains = {ALL: usage(np.ones(G, bool))}
    for d in sorted(set(domain_of.tolist())):
        domains[d] = usage(domain_of == d)
    categories = {g: usage(np.arange(G) == i) for i, g in enumerate(groups)}
    return domains, categories
