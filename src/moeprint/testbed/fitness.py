"""Is the testbed fit for purpose? Perplexity vs unigram, expert liveness, usage statistics beside an
untrained control, and the cross-domain masking check (own selection vs other domains' selections).

Only the cross-domain check shows LEARNED specialisation: usage statistics are confounded by which
tokens a domain uses, so they are always reported beside an untrained model of the same config.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch

from moeprint.progress import track
from moeprint.testbed.routing import (
    masked_perplexity,
    perplexity,
    routing_stats,
    select_experts,
    top_overlap,
    total_variation,
)


def load_testbed(model_dir: str | Path):
    """On the CPU in float32: docs/testbed.md's numbers were measured that way and must reproduce."""
    from moeprint.io.loader import CPU_FLOAT32, load_causal_lm, load_tokenizer

    return load_causal_lm(model_dir, CPU_FLOAT32), load_tokenizer(model_dir)


def untrained_like(model, seed: int = 0):
    """A randomly initialised model of the same config (the control for usage statistics)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    control = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    control.eval()
    return control


def streams_from_texts(
    tokenizer, texts: dict[str, list[str]], max_tokens: int | None = None
) -> dict[str, torch.Tensor]:
    """{domain: 1-D token ids}: documents joined by <|endoftext|>, cut to `max_tokens`."""
    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    out = {}
    for domain, docs in texts.items():
        ids: list[int] = []
        for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
            ids.extend(enc + [sep])
            if max_tokens is not None and len(ids) > max_tokens:
                break
        out[domain] = torch.tensor(ids[: max_tokens + 1 if max_tokens else None], dtype=torch.long)
    return out


def unigram_perplexity(reference: dict[str, torch.Tensor], stream: torch.Tensor, vocab_size: int) -> float:
    """Add-one unigram estimated on all `reference` tokens, evaluated on `stream` (targets only)."""
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for s in reference.values():
        counts += torch.bincount(s, minlength=vocab_size).double()
    logp = (counts / counts.sum()).log()
    return math.exp(-float(logp[stream[1:]].mean()))


def usage_statistics(model, calibration: dict[str, torch.Tensor], n: int, seq_len: int) -> dict:
    """Mean over domain pairs of per-layer TV distance of expert shares, and of top-n overlap (gate mass)."""
    stats = {d: routing_stats(model, s, seq_len) for d, s in calibration.items()}
    pairs = list(itertools.combinations(stats, 2))
    tv = torch.stack([total_variation(stats[a].shares(), stats[b].shares()) for a, b in pairs])  # (P, L)
    kept = {d: select_experts(st, n, "gate-mass") for d, st in stats.items()}
    overlap = [top_overlap(kept[a], kept[b]) for a, b in pairs]
    return {
        "tv_distance_per_layer": [float(x) for x in tv.mean(0)],
        "tv_distance_mean": float(tv.mean()),
        f"top{n}_overlap_mean": sum(overlap) / len(overlap),
    }


def cross_domain_check(
    model,
    calibration: dict[str, torch.Tensor],
    test: dict[str, torch.Tensor],
    ns=(16, 8),
    criteria=("gate-mass",),
    seq_len: int = 128,
    progress: bool = False,
    families: dict[str, str] | None = None,
) -> dict:
    """For each test domain d, criterion and n: perplexity with d's own selection, with each other domain's
    selection, and `reduction` = 1 - own / mean(others). With `families` ({domain: source kind}) also
    `same_source_reduction` against the other domains of d's family only (None if it has none)."""
    stats = {d: routing_stats(model, s, seq_len) for d, s in calibration.items()}
    results = {}
    cache: dict[tuple, float] = {}
    jobs = [(c, n, d) for c in criteria for n in ns for d in test]
    for criterion, n, domain in track(jobs, "cross-domain", progress):
        kept = {src: select_experts(st, n, criterion) for src, st in stats.items()}
        ppl = {}
        for src, sel in kept.items():
            key = (domain, tuple(map(tuple, sel)))
            if key not in cache:
                cache[key] = masked_perplexity(model, test[domain], sel, seq_len)
            ppl[src] = cache[key]
        others = [v for src, v in ppl.items() if src != domain]
        mean_others = sum(others) / len(others)
        family = [
            v for src, v in ppl.items() if src != domain and families and families.get(src) == families.get(domain)
        ]
        results[f"{criterion}/{n}/{domain}"] = {
            "criterion": criterion,
            "n": n,
            "domain": domain,
            "own": ppl[domain],
            "others_mean": mean_others,
            "reduction": 1 - ppl[domain] / mean_others,
            "by_source": ppl,
            "same_source_others_mean": sum(family) / len(family) if family else None,
            "same_source_reduction": 1 - ppl[domain] * len(family) / sum(family) if family else None,
        }
    return results


def fitness_report(
    model_dir: str | Path,
    data_dir: str | Path,
    test_tokens: int = 2048,
    calibration_tokens: int = 8192,
    criteria=("gate-mass", "frequency"),
    ns=(16, 8),
    seq_len: int = 128,
    progress: bool = False,
) -> dict:
    """Every number of docs/testbed.md's fitness table, from the committed model and texts."""
    from moeprint.io.atomic import read_json
    from moeprint.testbed.corpus import SOURCE_FAMILY, read_split

    model, tokenizer = load_testbed(model_dir)
    domains = list(read_json(Path(data_dir) / "manifest.json")["domains"])
    calib = streams_from_texts(tokenizer, {d: read_split(data_dir, d, "calibration") for d in domains})
    test = streams_from_texts(tokenizer, {d: read_split(data_dir, d, "test") for d in domains})
    calib_cut = {d: s[: calibration_tokens + 1] for d, s in calib.items()}
    test_cut = {d: s[: test_tokens + 1] for d, s in test.items()}
    vocab = model.config.vocab_size
    control = untrained_like(model)
    shares = sum(routing_stats(model, s, seq_len).frequency for s in test_cut.values())
    shares = shares / shares.sum(dim=1, keepdim=True)
    return {
        "test_tokens_per_domain": test_tokens,
        "calibration_tokens_per_domain": calibration_tokens,
        "test_tokens_available": {d: len(s) for d, s in test.items()},
        "perplexity": {d: perplexity(model, s, seq_len) for d, s in test_cut.items()},
        "unigram_perplexity": {d: unigram_perplexity(calib, s, vocab) for d, s in test_cut.items()},
        "min_expert_share_per_layer": [float(x) for x in shares.min(dim=1).values],
        "usage_trained": usage_statistics(model, calib_cut, 8, seq_len),
        "usage_untrained": usage_statistics(control, calib_cut, 8, seq_len),
        "cross_domain": cross_domain_check(
            model, calib_cut, test_cut, ns, criteria, seq_len, progress, families=SOURCE_FAMILY
        ),
    }
