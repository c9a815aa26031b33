"""The one model loader: safetensors only (a decoy pickle is never read), --device/--dtype placement,
masks in the model's own dtype, checkpoint evaluation without base and cut loaded together, and the
prompt-length checks against the model's context."""

from __future__ import annotations

import gc
import json
import shutil
import weakref

import pytest
import torch

from conftest import assert_clean_error, run_cli
from evaluate_helpers import domain_texts, write_jsonl
from moeprint.errors import MoeprintError
from moeprint.io.loader import CPU_FLOAT32, LoadSettings, device_map, input_device, load_causal_lm
from moeprint.types import PrunePlan

KEPT = ((0, 2, 5, 7), (1, 2, 3, 6))


def _plan(model_dir) -> PrunePlan:
    return PrunePlan(str(model_dir), "GptOssForCausalLM", "law", "frequency", 4, 2, KEPT)


def _plan_file(model_dir, path):
    path.write_text(
        json.dumps(
            {
                "base_model": str(model_dir),
                "architecture": "GptOssForCausalLM",
                "domain": "law",
                "criterion": "frequency",
                "n_experts": 4,
                "top_k": 2,
                "kept": [list(k) for k in KEPT],
            }
        )
    )
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _decoy(model_dir, tmp_path, safetensors_name: str):
    """A copy of the model whose safetensors file is `safetensors_name`, beside a pytorch_model.bin
    (a pickle) holding all-zero weights."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / f"decoy-{safetensors_name}"
    shutil.copytree(model_dir, out)
    if safetensors_name != "model.safetensors":
        (out / "model.safetensors").rename(out / safetensors_name)
    zeros = {k: torch.zeros_like(v) for k, v in AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items()}
    torch.save(zeros, out / "pytorch_model.bin")
    return out


def test_a_decoy_pickle_is_never_loaded(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[3, 17, 42, 99, 7]])
    reference = _logits(load_causal_lm(tiny_model_dir, CPU_FLOAT32), ids)
    beside = _decoy(tiny_model_dir, tmp_path, "model.safetensors")
    assert torch.equal(_logits(load_causal_lm(beside, CPU_FLOAT32), ids), reference)

    renamed = _decoy(tiny_model_dir, tmp_path, "weights.safetensors")
    # Stock transformers picks the pickle here (the decoy is live) ...
    stock = AutoModelForCausalLM.from_pretrained(renamed)
    assert all(float(p.detach().abs().sum()) == 0 for p in stock.parameters())
    # ... moeprint refuses instead of reading it, in the library and through every command that loads.
    with pytest.raises(MoeprintError, match="cannot load the model"):
        load_causal_lm(renamed, CPU_FLOAT32)
    plan = _plan_file(tiny_model_dir, tmp_path / "plan.json")
    proc = run_cli("mask", renamed, "--plan", plan, "--prompt", "The court")
    assert_clean_error(proc)
    assert "model.safetensors" in proc.stderr
    proc = run_cli(
        "record",
        renamed,
        "--prompts",
        "builtin",
        "--limit",
        "2",
        "--max-new-tokens",
        "2",
        "--out",
        tmp_path / "run",
        "--quiet",
    )
    assert_clean_error(proc)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_device_and_dtype_values(tiny_model_dir, tmp_path):
    with pytest.raises(MoeprintError, match="--device"):
        LoadSettings("gpu")
    with pytest.raises(MoeprintError, match="--dtype"):
        LoadSettings("cpu", "float16")
    assert device_map("cpu") == {"": "cpu"}
    plan = _plan_file(tiny_model_dir, tmp_path / "plan.json")
    proc = run_cli("mask", tiny_model_dir, "--plan", plan, "--prompt", "x", "--device", "tpu")
    assert_clean_error(proc)
    if torch.cuda.is_available():
        assert device_map("auto") == "auto" and device_map("cuda:0") == {"": "cuda:0"}
        model = load_causal_lm(tiny_model_dir, LoadSettings("cuda:0", "bfloat16"))
        assert model.get_input_embeddings().weight.device.type == "cuda"
    else:
        assert device_map("auto") == {"": "cpu"}
        with pytest.raises(MoeprintError, match="no CUDA GPU"):
            device_map("cuda")
        proc = run_cli("mask", tiny_model_dir, "--plan", plan, "--prompt", "x", "--device", "cuda:0")
        assert_clean_error(proc)
        assert "no CUDA GPU" in proc.stderr


def test_bfloat16_mask_equals_the_pruned_checkpoint_in_bfloat16(tiny_model_dir, tmp_path):
    """The mask acts on the model in the dtype it was loaded in; the pruned model in the same dtype agrees."""
    from moeprint.prune import load_masked
    from moeprint.prune.surgery import prune_checkpoint

    bf16 = LoadSettings("cpu", "bfloat16")
    ckpt = tmp_path / "ckpt"
    prune_checkpoint(tiny_model_dir, _plan(tiny_model_dir), ckpt, progress=False)
    pruned = load_causal_lm(ckpt, bf16)
    masked = load_masked(tiny_model_dir, _plan(tiny_model_dir), bf16)
    assert {p.dtype for p in masked.parameters()} == {torch.bfloat16}
    ids = torch.tensor([[5, 9, 200, 31, 8, 77, 12]])
    assert _logits(masked, ids).dtype == torch.bfloat16
    torch.testing.assert_close(_logits(masked, ids), _logits(pruned, ids), rtol=0, atol=0)

    plan = _plan_file(tiny_model_dir, tmp_path / "plan.json")
    a = run_cli(
        "mask",
        tiny_model_dir,
        "--plan",
        plan,
        "--prompt",
        "The court",
        "--dtype",
        "bfloat16",
        "--device",
        "cpu",
        "--max-new-tokens",
        "6",
        check=True,
    )
    from moeprint.io.loader import load_tokenizer
    from moeprint.prune.mask import generate_text

    assert a.stdout.rstrip("\n") == generate_text(pruned, load_tokenizer(ckpt), "The court", 6)


def test_masked_draft_shares_the_base_weights(tiny_model_dir):
    """The speculative draft of a mask is a twin of the base holding no second copy of the experts."""
    from moeprint.evaluate.cut import load_model, plan_cut
    from moeprint.prune import load_masked

    base = load_model(tiny_model_dir)
    cut = plan_cut(base, _plan(tiny_model_dir))
    ids = torch.tensor([[5, 9, 200, 31, 8]])
    plain = _logits(base.model, ids)
    expected = _logits(load_masked(tiny_model_dir, _plan(tiny_model_dir)), ids)
    with cut.standalone() as draft:
        shared = {p.data_ptr() for p in base.model.parameters()} & {p.data_ptr() for p in draft.parameters()}
        routers = {p.data_ptr() for _, b in base.adapter.moe_blocks(draft) for p in base.adapter.router(b).parameters()}
        assert not shared & routers
        n_shared = sum(p.numel() for p in draft.parameters() if p.data_ptr() in shared)
        assert n_shared == sum(p.numel() for p in draft.parameters()) - sum(
            p.numel() for _, b in base.adapter.moe_blocks(draft) for p in base.adapter.router(b).parameters()
        )
        assert torch.equal(_logits(draft, ids), expected)
        assert torch.equal(_logits(base.model, ids), plain)  # the base stays unmasked meanwhile


def test_spilled_reference_scores_like_the_in_memory_one(tiny_model_dir):
    from moeprint.evaluate import text
    from moeprint.evaluate.cut import base_cut, load_model, plan_cut
    from moeprint.evaluate.inputs import EvalText

    base = load_model(tiny_model_dir)
    texts = [EvalText(str(i), t["domain"], t["text"]) for i, t in enumerate(domain_texts(seed=2, per_domain=2))]
    windows = text.make_windows(texts, base.tokenizer, 64, base.model)
    cached = text.build_reference(base_cut(base), windows, base.tokenizer.pad_token_id, batch_tokens=128)
    spilled = text.build_reference(
        base_cut(base), windows, base.tokenizer.pad_token_id, batch_tokens=128, cache_bytes=0, keep_all=True
    )
    assert spilled.spill is not None and len(spilled.logprobs) == len(spilled.groups) > 1
    cut = plan_cut(base, _plan(tiny_model_dir))
    a = text.compare_texts(cached, cut)
    b = text.compare_texts(spilled, cut)  # no base model: every base log-prob comes from the temp files
    assert {d: vars(t) for d, t in a.items()} == {d: vars(t) for d, t in b.items()}


def test_checkpoint_evaluation_releases_the_base_first(tiny_model_dir, tmp_path, monkeypatch):
    import moeprint.evaluate.cut as cut_module
    from moeprint.evaluate import EvalSettings, evaluate
    from moeprint.prune.surgery import prune_checkpoint

    ckpt = tmp_path / "ckpt"
    prune_checkpoint(tiny_model_dir, _plan(tiny_model_dir), ckpt, progress=False)
    texts = write_jsonl(tmp_path / "texts.jsonl", domain_texts(seed=2, per_domain=2))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p1", "domain": "law", "text": "The court"}])
    live: list[weakref.ref] = []
    alive_at_load: list[int] = []
    real = cut_module.load_causal_lm

    def counting(path, settings):
        gc.collect()
        alive_at_load.append(sum(r() is not None for r in live))
        model = real(path, settings)
        live.append(weakref.ref(model))
        return model

    monkeypatch.setattr(cut_module, "load_causal_lm", counting)
    out = tmp_path / "ckpt.json"
    evaluate(
        tiny_model_dir,
        checkpoint=ckpt,
        texts_path=texts,
        prompts_path=str(prompts),
        out=out,
        settings=EvalSettings(max_new_tokens=4, speculative=False),
    )
    assert alive_at_load == [0, 0]  # the base was gone before the checkpoint loaded
    sequential = json.loads(out.read_text())

    alive_at_load.clear()
    out2 = tmp_path / "ckpt-spec.json"
    evaluate(
        tiny_model_dir,
        checkpoint=ckpt,
        texts_path=texts,
        prompts_path=str(prompts),
        out=out2,
        settings=EvalSettings(max_new_tokens=4),
    )
    assert alive_at_load == [0, 1]  # assisted generation needs both: the base stays
    both = json.loads(out2.read_text())
    assert sequential["text"] == both["text"] and sequential["generation"] == both["generation"]
    assert both["speculative"]["all"]["new_tokens"] > 0


def test_prompts_longer_than_the_context_are_refused(tiny_model_dir, tmp_path):
    """The tiny model has 512 positions: each stage refuses what cannot fit, with one error line and no output."""
    long_text = " ".join(["court"] * 2000)
    prompts = write_jsonl(
        tmp_path / "long.jsonl",
        [{"id": "ok", "domain": "law", "text": "The court"}, {"id": "huge", "domain": "law", "text": long_text}],
    )
    proc = run_cli(
        "record", tiny_model_dir, "--prompts", prompts, "--out", tmp_path / "run", "--quiet", "--max-new-tokens", "4"
    )
    assert_clean_error(proc)
    assert "'huge'" in proc.stderr and "context is 512" in proc.stderr
    assert not (tmp_path / "run").exists()

    plan = _plan_file(tiny_model_dir, tmp_path / "plan.json")
    proc = run_cli("mask", tiny_model_dir, "--plan", plan, "--prompt", long_text)
    assert_clean_error(proc)
    assert "context is 512" in proc.stderr
    proc = run_cli("mask", tiny_model_dir, "--plan", plan, "--prompt", "The court", "--max-new-tokens", "600")
    assert_clean_error(proc)

    texts = write_jsonl(tmp_path / "texts.jsonl", domain_texts(seed=2, per_domain=1))
    proc = run_cli(
        "evaluate",
        tiny_model_dir,
        "--plan",
        plan,
        "--texts",
        texts,
        "--max-tokens",
        "2048",
        "--out",
        tmp_path / "e.json",
    )
    assert_clean_error(proc)
    assert "--max-tokens needs 2048 positions" in proc.stderr and not (tmp_path / "e.json").exists()
    proc = run_cli(
        "evaluate",
        tiny_model_dir,
        "--plan",
        plan,
        "--texts",
        texts,
        "--prompts",
        prompts,
        "--max-new-tokens",
        "4",
        "--out",
        tmp_path / "g.json",
    )
    assert_clean_error(proc)
    assert not (tmp_path / "g.json").exists()


def test_expertwise_mxfp4_dequantisation_is_bit_identical_to_stock(tmp_path, monkeypatch):
    """The loader dequantises MXFP4 experts one expert at a time (bounded workspace, docs/memory.md); the
    loaded weights equal transformers' own whole-tensor dequantisation bit for bit."""
    import contextlib

    from transformers.integrations import mxfp4

    import moeprint.adapters.mxfp4 as codec
    from moeprint.testbed.synthetic import build_mxfp4_model

    model_dir = build_mxfp4_model(tmp_path / "mx", num_experts=4)
    calls = []
    expertwise = codec.dequantise_expertwise
    monkeypatch.setattr(codec, "dequantise_expertwise", lambda *a: calls.append(a[0].shape) or expertwise(*a))
    ours = load_causal_lm(model_dir, LoadSettings("cpu", "bfloat16")).state_dict()
    assert mxfp4.dequantize_convertops is not codec.dequantise_expertwise  # restored after loading
    n_layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    assert len(calls) == 2 * n_layers and all(shape[0] == 4 for shape in calls)  # gate_up and down per layer

    monkeypatch.setattr(codec, "expertwise_mxfp4_dequantisation", contextlib.nullcontext)
    stock = load_causal_lm(model_dir, LoadSettings("cpu", "bfloat16")).state_dict()
    assert len(calls) == 2 * n_layers  # the stock load did not come through here
    assert ours.keys() == stock.keys()
    for name, tensor in stock.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name].view(torch.uint8), tensor.view(torch.uint8))
    assert any("experts.gate_up_proj" in n for n in stock)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")
def test_cuda_placement_runs_the_cpu_code_path_on_the_gpu(tiny_model_dir, tmp_path):
    """The same loader and the same commands with --device cuda:0: weights on the GPU, logits as on the CPU."""
    cpu = load_causal_lm(tiny_model_dir, LoadSettings("cpu", "float32"))
    gpu = load_causal_lm(tiny_model_dir, LoadSettings("cuda:0", "float32"))
    assert {p.device.type for p in gpu.parameters()} == {"cuda"} and input_device(gpu).type == "cuda"
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    assert torch.allclose(_logits(gpu, ids.to("cuda:0")).cpu(), _logits(cpu, ids), atol=1e-4)
    plan = _plan_file(tiny_model_dir, tmp_path / "plan.json")
    for device in ("cpu", "cuda:0"):
        proc = run_cli(
            "mask", tiny_model_dir, "--plan", plan, "--prompt", "x", "--max-new-tokens", "2", "--device", device
        )
        assert proc.returncode == 0, proc.stderr
