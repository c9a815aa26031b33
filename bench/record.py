"""Recording speed on a tiny gpt-oss model, as ratios measured in one run.

1. capture overhead: the same batched greedy `generate` with and without the router hooks
   (hooks + moving the batch's captures to the host), and the whole per-batch recording pipeline
   (hooks, the extra forward of the final token, token mapping, Arrow table) vs plain generate.
   Target: hooks <= 5 %.
2. batched recording throughput (batch 8) vs one prompt at a time. Target: >= 4x.
Each timing is the process CPU time (one thread), best of --repeats interleaved runs (3 for batch 1): on a shared
machine wall time mostly measures the neighbours.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/record.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moeprint.adapters.gpt_oss import GPT_OSS
from moeprint.prompts import TemplateInputs, load_prompts
from moeprint.record.hooks import RouterHooks
from moeprint.record.options import RecordSettings
from moeprint.record.runner import _prepare, _record_batch, _special_ids
from moeprint.record.segments import ChannelSegmenter
from moeprint.testbed.tiny import build_tiny_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(
            Path(tmp) / "model", num_layers=4, num_experts=16, top_k=4, hidden_size=64, intermediate_size=64
        )
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = load_prompts("builtin")[: args.prompts]
    prepared = sorted((_prepare(tok, p, None, TemplateInputs()) for p in prompts), key=lambda p: len(p.token_ids))
    pad_id, eos_ids = _special_ids(tok, model)
    capture = RouterHooks(model, GPT_OSS)
    segmenter = ChannelSegmenter(tok)

    def batches(size):
        return [prepared[i : i + size] for i in range(0, len(prepared), size)]

    def generate_left_padded(batch):
        S = max(len(p.token_ids) for p in batch)
        ids = torch.full((len(batch), S), pad_id)  # (B, S)
        mask = torch.zeros_like(ids)
        for b, p in enumerate(batch):
            ids[b, S - len(p.token_ids) :] = torch.tensor(p.token_ids)
            mask[b, S - len(p.token_ids) :] = 1
        model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_ids,
        )

    def plain(size):
        for batch in batches(size):
            generate_left_padded(batch)

    def hooked(size):
        with capture:
            for batch in batches(size):
                generate_left_padded(batch)
                for layer in capture.take():  # the per-batch host copy the runner does
                    torch.cat([c.ids for c in layer]).cpu()
                    torch.cat([c.weights for c in layer]).cpu()

    # what `_record_batch` reads of a runner.Recorder, without loading the model a second time
    recorder = SimpleNamespace(
        model=model,
        tokenizer=tok,
        hooks=capture,
        segmenter=segmenter,
        settings=RecordSettings(max_new_tokens=args.max_new_tokens),
        pad_id=pad_id,
        eos_ids=eos_ids,
    )

    def recorded(size):
        with capture:
            for batch in batches(size):
                _record_batch(recorder, batch)

    def timed(fn, size):
        t = time.process_time()  # CPU time of this process: robust to other jobs on a shared machine
        with torch.no_grad():
            fn(size)
        return time.process_time() - t

    bs = args.batch_size
    timed(plain, bs)  # warm-up
    t_plain = t_hooked = t_recorded = t_one = float("inf")
    for r in range(args.repeats):  # interleaved, so slow phases of the machine hit every variant
        t_plain = min(t_plain, timed(plain, bs))
        t_hooked = min(t_hooked, timed(hooked, bs))
        t_recorded = min(t_recorded, timed(recorded, bs))
        if r < 3:
            t_one = min(t_one, timed(recorded, 1))
    n_tokens = sum(len(p.token_ids) + args.max_new_tokens for p in prepared)

    # The hook in isolation: one decode-step router call (8 rows), with and without the capture hook.
    router = GPT_OSS.router(GPT_OSS.moe_blocks(model)[0][1])
    x = torch.randn(bs, model.config.hidden_size)
    with torch.no_grad():
        bare = min(timeit.repeat(lambda: router(x), number=2000, repeat=7)) / 2000
        with capture:
            hooked_call = min(timeit.repeat(lambda: router(x), number=2000, repeat=7)) / 2000
        capture.take()

    print(
        f"CPU seconds (process time, best of {args.repeats}); tiny gpt-oss: 4 layers x 16 experts top-4, hidden 64; {len(prepared)} prompts, "
        f"{args.max_new_tokens} new tokens each, batch {bs}, {n_tokens} routed tokens, 1 thread"
    )
    print(f"plain generate                 {t_plain:8.3f} s")
    print(
        f"generate + hooks               {t_hooked:8.3f} s   overhead {100 * (t_hooked / t_plain - 1):+.1f} %  (target <= 5 %)"
    )
    print(
        f"  one router call {bare * 1e6:.1f} us, with the capture hook {hooked_call * 1e6:.1f} us "
        f"({(hooked_call - bare) * 1e6:+.1f} us per call)"
    )
    print(
        f"full recording pipeline        {t_recorded:8.3f} s   overhead {100 * (t_recorded / t_plain - 1):+.1f} %  "
        "(hooks + final-token forward + token mapping + table)"
    )
    print(f"recording one prompt at a time {t_one:8.3f} s   batched speed-up {t_one / t_recorded:.2f}x  (target >= 4x)")
    print(f"recording throughput: batch {bs} {n_tokens / t_recorded:,.0f} tok/s, batch 1 {n_tokens / t_one:,.0f} tok/s")


if __name__ == "__main__":
    main()
