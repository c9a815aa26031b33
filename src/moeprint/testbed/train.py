"""Train the testbed: a small GptOssForCausalLM with gpt-oss routing geometry, on CPU, from a fixed seed.

Recipe (read top to bottom): BPE tokenizer on the train texts -> token stream per domain -> batches of
random windows, each window's domain drawn with probability ~ sqrt(domain size) -> AdamW with warmup and
cosine decay -> loss = next-token cross-entropy + a PER-LAYER switch load-balancing loss, plus a small
bias nudge toward balance after each step (transformers' pooled balancing loss cannot see one layer's dead
experts) -> held-out perplexity per domain, unigram baseline, expert loads, plots, manifest.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json, read_json
from moeprint.progress import bar
from moeprint.testbed.corpus import read_split
from moeprint.testbed.tiny import build_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1234
    steps: int = 600
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    balance_coef: float = 0.05  # per-layer switch loss, averaged over layers
    bias_nudge: float = 1e-3  # router bias step toward balance per training step
    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 128
    num_layers: int = 4
    num_experts: int = 32
    top_k: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    train_split: str = "train"
    max_train_chars_per_domain: int = 1_500_000
    eval_tokens: int | None = None  # held-out tokens per domain for the manifest's perplexity (None: all)
    threads: int = 1  # one thread: on a shared 2-core machine two threads ran 4x slower


MINIATURE = dict(
    steps=40,
    batch_size=8,
    seq_len=64,
    vocab_size=512,
    hidden_size=32,
    intermediate_size=32,
    num_layers=2,
    num_experts=8,
    top_k=2,
    warmup_steps=5,
    train_split="calibration",
    max_train_chars_per_domain=60_000,
    eval_tokens=4096,
)


def model_config(cfg: TrainConfig, vocab_size: int, eos: int, pad: int):
    from transformers import GptOssConfig

    return GptOssConfig(
        architectures=["GptOssForCausalLM"],
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        num_local_experts=cfg.num_experts,
        num_experts_per_tok=cfg.top_k,
        sliding_window=cfg.seq_len // 2,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(cfg.num_layers)],
        max_position_embeddings=4 * cfg.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
        tie_word_embeddings=False,
        output_router_logits=False,
    )


# ---- data -------------------------------------------------------------------------------------


def domains_of(corpus_dir: Path) -> list[str]:
    manifest = read_json(corpus_dir / "manifest.json")
    return list(manifest["domains"])


def token_streams(tokenizer, corpus_dir: Path, domains: list[str], split: str, max_chars: int | None = None):
    """One 1-D LongTensor per domain: its documents' tokens joined by <|endoftext|>."""
    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    streams = {}
    for d in domains:
        texts, total = [], 0
        for t in read_split(corpus_dir, d, split):
            if max_chars is not None and total >= max_chars:
                break
            texts.append(t)
            total += len(t)
        ids: list[int] = []
        for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids.extend(enc)
            ids.append(sep)
        streams[d] = torch.tensor(ids, dtype=torch.long)
    return streams


def sample_batch(streams, domains, probs, batch_size, seq_len, gen):
    """Random windows; each window's domain drawn from `probs`. Returns (B, T) token ids."""
    picks = torch.multinomial(probs, batch_size, replacement=True, generator=gen)  # (B,)
    rows = []
    for p in picks.tolist():
        s = streams[domains[p]]
        start = int(torch.randint(0, len(s) - seq_len, (1,), generator=gen))
        rows.append(s[start : start + seq_len])
    return torch.stack(rows)  # (B, T)


# ---- losses -----------------------------------------------------------------------------------


def per_layer_balance_loss(router_logits, top_k: int) -> torch.Tensor:
    """Mean over layers of E * sum_e f_e * P_e (f: share of routed slots, P: mean router probability)."""
    losses = []
    for logits in router_logits:  # (N, E) per layer
        num_experts = logits.shape[-1]
        probs = logits.softmax(dim=-1)  # (N, E)
        top_ids = logits.topk(top_k, dim=-1).indices  # (N, k)
        share = F.one_hot(top_ids, num_experts).sum(dim=(0, 1)).float() / top_ids.numel()  # (E,)
        losses.append(num_experts * (share * probs.mean(dim=0)).sum())
    return torch.stack(losses).mean()


def unigram_perplexity(train_streams, test_stream: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of add-one unigram counts from all train tokens, on the test tokens."""
    counts = torch.ones(vocab_size, dtype=torch.float64)
    for s in train_streams.values():
        counts += torch.bincount(s, minlength=vocab_size).double()
    logp = (counts / counts.sum()).log()
    return math.exp(-float(logp[test_stream[1:]].mean()))


# ---- train ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_testbed(
    corpus_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, overwrite: bool = False, progress: bool = True
) -> dict:
    """Train and write a complete model folder (manifest written last); returns the training manifest."""
    from transformers import GenerationConfig, GptOssForCausalLM

    from moeprint.testbed.plots import plot_expert_load, plot_loss_curve
    from moeprint.testbed.routing import expert_token_shares, perplexity

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not (corpus_dir / "manifest.json").exists():
        raise MoeprintError(f"{corpus_dir} is not a testbed corpus (no manifest.json); run `moeprint testbed corpus`.")
    domains = domains_of(corpus_dir)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.time()

    with atomic_directory(out_dir, overwrite=overwrite, kind="moeprint-testbed-model") as tmp:
        tokenizer = build_tokenizer(tmp, texts=_tokenizer_sample(corpus_dir, domains, cfg), vocab_size=cfg.vocab_size)
        eos, pad = tokenizer.convert_tokens_to_ids("<|return|>"), tokenizer.convert_tokens_to_ids("<|pad|>")
        train = token_streams(tokenizer, corpus_dir, domains, cfg.train_split, cfg.max_train_chars_per_domain)
        test = token_streams(tokenizer, corpus_dir, domains, "test")
        if cfg.eval_tokens is not None:
            test = {d: s[: cfg.eval_tokens + 1] for d, s in test.items()}
        sizes = torch.tensor([len(train[d]) for d in domains], dtype=torch.float64)
        probs = sizes.sqrt() / sizes.sqrt().sum()

        config = model_config(cfg, len(tokenizer), eos, pad)
        config._experts_implementation = "grouped_mm"  # fast on CPU; not saved, loading uses the default
        model = GptOssForCausalLM(config)
        history = _train(model, train, domains, probs, cfg, progress)
        train_seconds = time.time() - started
        model.eval()

        heldout = {d: perplexity(model, test[d], cfg.seq_len) for d in domains}
        unigram = {d: unigram_perplexity(train, test[d], len(tokenizer)) for d in domains}
        shares = expert_token_shares(model, [test[d][: 8 * cfg.seq_len * 16] for d in domains], cfg.seq_len)
        model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
        model.save_pretrained(tmp)
        plot_loss_curve(history, tmp / "loss_curve")
        plot_expert_load(shares, tmp / "expert_load")
        corpus_manifest = corpus_dir / "manifest.json"
        manifest = {
            "kind": "moeprint-testbed-model",
            "config": asdict(cfg),
            "parameters": sum(p.numel() for p in model.parameters()),
            "corpus_manifest_sha256": _sha256(corpus_manifest),
            "corpus_files": {
                d: {s: v["sha256"] for s, v in meta["splits"].items()}
                for d, meta in read_json(corpus_manifest)["domains"].items()
            },
            "domain_sampling_probability": {d: float(p) for d, p in zip(domains, probs)},
            "train_tokens_available": {d: len(train[d]) for d in domains},
            "test_tokens": {d: len(test[d]) for d in domains},
            "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
            "train_seconds": round(train_seconds, 1),
            "tokens_per_second": round(cfg.steps * cfg.batch_size * cfg.seq_len / train_seconds, 1),
            "heldout_perplexity": heldout,
            "unigram_perplexity": unigram,
            "min_expert_share_per_layer": [float(s.min()) for s in shares],
            "final_lm_loss_mean_last_20": sum(h["lm_loss"] for h in history[-20:]) / len(history[-20:]),
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
            "loss_history": [round(h["lm_loss"], 4) for h in history],
        }
        atomic_write_json(tmp / "training_manifest.json", manifest)
    return manifest


def _tokenizer_sample(corpus_dir: Path, domains: list[str], cfg: TrainConfig) -> list[str]:
    """The tokenizer's training texts: an equal-size sample (about 400k characters) of every domain's train split."""
    sample = []
    for d in domains:
        texts, total = [], 0
        for t in read_split(corpus_dir, d, cfg.train_split):
            if total >= 400_000:
                break
            texts.append(t)
            total += len(t)
        sample.extend(texts)
    return sample


def _learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _train(
    model, train: dict, domains: list[str], probs: torch.Tensor, cfg: TrainConfig, progress: bool
) -> list[dict[str, float]]:
    """cfg.steps AdamW steps on domain-sampled batches (LM loss + load balance, router-bias nudges);
    returns the per-step losses."""
    from moeprint.adapters import adapter_for

    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "router" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "router" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    adapter = adapter_for(model.config)
    routers = [adapter.router(block) for _, block in adapter.moe_blocks(model)]
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    with bar("train (steps)", cfg.steps, progress) as advance:
        for step in range(cfg.steps):
            for g in opt.param_groups:
                g["lr"] = _learning_rate(cfg, step)
            batch = sample_batch(train, domains, probs, cfg.batch_size, cfg.seq_len, gen)  # (B, T)
            out = model(input_ids=batch, output_router_logits=True)
            lm_loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten())
            balance = per_layer_balance_loss(out.router_logits, cfg.top_k)
            loss = lm_loss + cfg.balance_coef * balance
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():  # nudge under-used experts up, over-used down, per layer
                for router, logits in zip(routers, out.router_logits):
                    top_ids = logits.topk(cfg.top_k, dim=-1).indices  # (B*T, k)
                    load = torch.bincount(top_ids.flatten(), minlength=cfg.num_experts).float()  # (E,)
                    router.bias += cfg.bias_nudge * torch.sign(load.mean() - load)
            history.append({"step": step, "lm_loss": float(lm_loss), "balance_loss": float(balance)})
            advance(status=f"loss {float(lm_loss):.3f} bal {float(balance):.3f}")
    return history


def record_reproduction(model_dir: str | Path, retrained_dir: str | Path) -> dict:
    """Compare a retrained model's held-out perplexity with `model_dir`'s and record it in its manifest."""
    from safetensors.torch import load_file

    model_dir, retrained_dir = Path(model_dir), Path(retrained_dir)
    ours = read_json(model_dir / "training_manifest.json")
    theirs = read_json(retrained_dir / "training_manifest.json")
    if ours["config"] != theirs["config"]:
        raise MoeprintError("the retrained model used a different training config; it is not a reproduction.")
    a, b = load_file(model_dir / "model.safetensors"), load_file(retrained_dir / "model.safetensors")
    rel = {d: abs(theirs["heldout_perplexity"][d] / p - 1) for d, p in ours["heldout_perplexity"].items()}
    ours["reproduction"] = {
        "retrained_heldout_perplexity": theirs["heldout_perplexity"],
        "max_relative_perplexity_difference": max(rel.values()),
        "within_2_percent": max(rel.values()) <= 0.02,
        "weights_bitwise_identical": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
        "corpus_rebuilt_identically": ours["corpus_files"] == theirs["corpus_files"],
        "retrain_seconds": theirs["train_seconds"],
    }
    atomic_write_json(model_dir / "training_manifest.json", ours)
    return ours["reproduction"]
