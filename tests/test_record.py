"""Recording: every (token, layer) routing equals an independent recomputation from the router weights."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moeprint.adapters.gpt_oss import GPT_OSS
from moeprint.io.run import open_run
from moeprint.prompts import render_prompt
from moeprint.record import RecordSettings, record
from moeprint.record.hooks import RouterHooks
from moeprint.types import PromptRecord

PROMPTS = [
    PromptRecord("p-short", "math", "test", messages=({"role": "user", "content": "2+2?"},)),
    PromptRecord(
        "p-long",
        "law",
        "test",
        messages=(
            {
                "role": "user",
                "content": "Explain the doctrine of precedent in common law systems, with two examples, briefly.",
            },
        ),
    ),
    PromptRecord("p-text", "science", "test", text="Water boils at"),
    PromptRecord("p-mid", "science", "test", messages=({"role": "user", "content": "Why is the sky blue?"},)),
]


def read_run(path):
    run = open_run(path)
    traces = pq.ParquetDataset(str(run.traces_dir)).read().to_pylist()
    prompts = {r["prompt_id"]: r for r in pq.read_table(run.prompts_path).to_pylist()}
    return run.manifest(), traces, prompts


def plain_routing(model, token_ids):
    """Router top-k of one unpadded sequence, computed from each MoE block's input and router.weight/bias."""
    inputs = []
    blocks = [layer.mlp for layer in model.model.layers]
    handles = [
        b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].reshape(-1, a[0].shape[-1]))) for b in blocks
    ]
    with torch.no_grad():
        out = model(torch.tensor([token_ids]))
    for h in handles:
        h.remove()
    k = model.config.num_experts_per_tok
    ids, weights, logits = [], [], []
    for block, x in zip(blocks, inputs):
        lg = x @ block.router.weight.T + block.router.bias  # (T, E)
        top = lg.topk(k, dim=-1)
        ids.append(top.indices)
        weights.append(torch.exp(top.values - top.values.max(-1, keepdim=True).values))
        weights[-1] = weights[-1] / weights[-1].sum(-1, keepdim=True)
        logits.append(lg)
    return torch.stack(ids, 1), torch.stack(weights, 1), torch.stack(logits, 1), inputs, out.logits[0]


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("batch_size,max_new_tokens", [(1, 6), (3, 6), (1, 0), (3, 0)])
def test_recorded_routing_equals_plain_forward(tiny_model_dir, model_and_tok, tmp_path, batch_size, max_new_tokens):
    """Also prefill only (--max-new-tokens 0): the prompt tokens alone, each routed as the plain forward routes it."""
    model, tok = model_and_tok
    path = record(
        tiny_model_dir,
        PROMPTS,
        tmp_path / "run",
        RecordSettings(max_new_tokens=max_new_tokens, batch_size=batch_size, logits=True),
        progress=False,
    )
    manifest, traces, prompts = read_run(path)
    assert manifest.n_prompts == 4 and manifest.n_tokens == len(traces) and manifest.has_logits
    pad = tok.pad_token_id
    eos = model.generation_config.eos_token_id
    for p in PROMPTS:
        rows = sorted((r for r in traces if r["prompt_id"] == p.prompt_id), key=lambda r: r["position"])
        meta = prompts[p.prompt_id]
        expected_prompt = tok(render_prompt(tok, p), add_special_tokens=p.text is not None)["input_ids"]
        tokens = [r["token_id"] for r in rows]
        n_prompt, n_gen = meta["n_prompt_tokens"], meta["n_generated_tokens"]
        # prompt tokens exactly (no padding rows), then every generated token including the last one
        assert tokens[:n_prompt] == expected_prompt and pad not in tokens[:n_prompt]
        assert [r["position"] for r in rows] == list(range(n_prompt + n_gen)) and n_gen >= min(1, max_new_tokens)
        assert [r["is_generated"] for r in rows] == [False] * n_prompt + [True] * n_gen
        assert meta["finished"] == (tokens[-1] == eos) and (meta["finished"] or n_gen == max_new_tokens)
        assert {r["segment"] for r in rows[:n_prompt]} == {"prompt"} and {r["domain"] for r in rows} == {p.domain}

        ids, weights, logits, _, lm_logits = plain_routing(model, tokens)  # (T, L, k), (T, L, k), (T, L, E)
        # greedy: each generated token is the argmax after its predecessor in the plain forward
        assert lm_logits[n_prompt - 1 : -1].argmax(-1).tolist() == tokens[n_prompt:]
        rec_ids = torch.tensor([r["ids"] for r in rows]).reshape(len(rows), 2, 2)
        rec_w = torch.tensor([r["weights"] for r in rows]).reshape(len(rows), 2, 2)
        rec_logits = torch.tensor([r["logits"] for r in rows]).reshape(len(rows), 2, 8)
        assert torch.equal(rec_ids.long(), ids)
        assert torch.allclose(rec_w, weights, atol=1e-5)
        assert torch.allclose(rec_logits, logits, atol=1e-4)


def test_expert_norms_equal_the_models_own_expert_outputs(tiny_model_dir, model_and_tok, tmp_path):
    model, _ = model_and_tok
    path = record(
        tiny_model_dir,
        PROMPTS[:2],
        tmp_path / "run",
        RecordSettings(max_new_tokens=4, batch_size=2, expert_norms=True),
        progress=False,
    )
    manifest, traces, _ = read_run(path)
    assert manifest.has_norms
    for pid in ("p-short", "p-long"):
        rows = sorted((r for r in traces if r["prompt_id"] == pid), key=lambda r: r["position"])
        ids, _, _, inputs, _ = plain_routing(model, [r["token_id"] for r in rows])
        norms = torch.tensor([r["expert_norms"] for r in rows]).reshape(len(rows), 2, 2)
        for layer, x in enumerate(inputs):
            experts = model.model.layers[layer].mlp.experts
            for t in range(len(rows)):
                for slot in range(2):
                    j = int(ids[t, layer, slot])
                    # the model's own experts module with weight 1 on expert j and 0 on another one
                    out = experts(x[t : t + 1], torch.tensor([[j, (j + 1) % 8]]), torch.tensor([[1.0, 0.0]]))
                    assert torch.allclose(norms[t, layer, slot], out.norm(), rtol=1e-4, atol=1e-5)


class Mxfp4GptOssMLP(torch.nn.Module):
    """Stands in for the MXFP4 kernel MLP: calls router weights directly, returns (out, router_logits)."""

    def __init__(self, block):
        super().__init__()
        self.router, self.experts = block.router, block.experts

    def forward(self, hidden):
        B, S, H = hidden.shape
        x = hidden.reshape(-1, H)
        logits = torch.nn.functional.linear(x, self.router.weight, self.router.bias)
        top = logits.topk(self.router.top_k, dim=-1)
        out = self.experts(x, top.indices, torch.softmax(top.values, dim=-1))
        return out.reshape(B, S, H), logits


def test_fused_block_is_captured_from_its_router_logits(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokens = list(range(5, 25))
    ids, weights, _, _, expected_logits = plain_routing(model, tokens)
    for layer in model.model.layers:
        layer.mlp = Mxfp4GptOssMLP(layer.mlp)
    router_calls = []
    for layer in model.model.layers:
        layer.mlp.router.register_forward_hook(lambda *a: router_calls.append(1))
    with RouterHooks(model, GPT_OSS, logits=True) as cap, torch.no_grad():
        out = model(torch.tensor([tokens]))
    assert router_calls == []  # the fused path never calls the router module
    assert torch.allclose(out.logits[0], expected_logits, atol=1e-5)  # the stand-in computes the same model
    calls = cap.take()
    assert [len(c) for c in calls] == [1, 1]
    for layer, (call,) in enumerate(calls):
        assert torch.equal(call.ids.long(), ids[:, layer])
        assert torch.allclose(call.weights.float(), weights[:, layer], atol=1e-6)


def test_eos_ends_a_prompt_and_later_padding_is_dropped(tiny_model_dir, model_and_tok, tmp_path):
    """Make a token the model generates early an EOS: that prompt is `finished`, its rows stop at the EOS,
    the other prompts in the batch keep generating, and all routing still matches the plain forward."""
    import shutil

    model, _ = model_and_tok
    first = record(
        tiny_model_dir, PROMPTS, tmp_path / "a", RecordSettings(max_new_tokens=6, batch_size=4), progress=False
    )
    _, traces, _ = read_run(first)
    gen = sorted((r for r in traces if r["prompt_id"] == "p-long" and r["is_generated"]), key=lambda r: r["position"])
    stop = gen[1]["token_id"]  # p-long's second generated token becomes an EOS
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    cfg = json.loads((model_dir / "generation_config.json").read_text())
    cfg["eos_token_id"] = [cfg["eos_token_id"], stop]
    (model_dir / "generation_config.json").write_text(json.dumps(cfg))

    _, traces, prompts = read_run(
        record(model_dir, PROMPTS, tmp_path / "b", RecordSettings(max_new_tokens=6, batch_size=4), progress=False)
    )
    meta = prompts["p-long"]
    assert meta["finished"] and meta["n_generated_tokens"] <= 2
    for p in PROMPTS:
        rows = sorted((r for r in traces if r["prompt_id"] == p.prompt_id), key=lambda r: r["position"])
        tokens = [r["token_id"] for r in rows]
        assert len(rows) == prompts[p.prompt_id]["n_prompt_tokens"] + prompts[p.prompt_id]["n_generated_tokens"]
        assert stop not in tokens[prompts[p.prompt_id]["n_prompt_tokens"] : -1]  # nothing after an EOS
        ids, weights, _, _, _ = plain_routing(model, tokens)
        assert torch.equal(torch.tensor([r["ids"] for r in rows]).reshape(ids.shape).long(), ids)
        assert torch.allclose(torch.tensor([r["weights"] for r in rows]).reshape(ids.shape), weights, atol=1e-5)
    assert any(not m["finished"] for m in prompts.values())


def test_prefill_only_recording_through_the_cli(tiny_model_dir, tmp_path):
    from conftest import assert_clean_error, run_cli

    out = tmp_path / "prefill"
    run_cli(
        "record",
        tiny_model_dir,
        "--prompts",
        "builtin",
        "--limit",
        "3",
        "--max-new-tokens",
        "0",
        "--quiet",
        "--out",
        out,
        check=True,
    )
    manifest, traces, prompts = read_run(out)
    assert manifest.generation.max_new_tokens == 0
    assert not any(r["is_generated"] for r in traces) and {r["segment"] for r in traces} == {"prompt"}
    assert manifest.n_tokens == len(traces) == sum(p["n_prompt_tokens"] for p in prompts.values())
    assert all(p["n_generated_tokens"] == 0 and p["completion"] == "" and not p["finished"] for p in prompts.values())
    proc = run_cli("record", tiny_model_dir, "--prompts", "builtin", "--max-new-tokens", "-1", "--out", tmp_path / "x")
    assert_clean_error(proc)
    assert "at least 0" in proc.stderr and not (tmp_path / "x").exists()
