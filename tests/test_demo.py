"""`moeprint demo` end to end on the committed testbed (small settings), and its bad input."""

import csv
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import assert_clean_error, run_cli
from moeprint import testbed  # not `from ... import testbed_*`: pytest would collect those as tests
from moeprint.adapters import adapter_for
from moeprint.demo import DEMO_DOMAIN, DEMO_EXPERTS, SWEEP_CRITERIA, DemoSettings, run_demo


def test_demo_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = run_cli("demo", "--out", tmp_path, "--quiet")
    assert_clean_error(proc)
    assert "not empty" in proc.stderr and (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    settings = DemoSettings(
        docs_per_domain=3, doc_chars=400, test_docs_per_domain=2, prompts_per_domain=1, random_seeds=1
    )
    where = run_demo(tmp_path / "demo", settings, progress=False)
    for path in where.values():
        assert path.exists(), path

    # the checkpoint keeps DEMO_EXPERTS experts and computes what the base computes with the plan as a mask
    plan = json.loads(where["plan"].read_text())
    assert plan["domain"] == DEMO_DOMAIN and plan["n_experts"] == DEMO_EXPERTS
    checkpoint = where["pruned checkpoint (+ README.md card)"]
    pruned = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(testbed.testbed_path(), dtype=torch.float32).eval()
    assert pruned.config.num_local_experts == DEMO_EXPERTS
    ids = torch.randint(0, base.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), adapter_for(base.config).router_mask(base, plan["kept"]):
        masked = base(ids).logits
    with torch.no_grad():
        assert torch.allclose(pruned(ids).logits, masked, atol=1e-5)

    # the card reports the evaluation that the demo wrote
    evaluation = json.loads(where["evaluation (perplexity, KL, generation health, draft acceptance)"].read_text())
    card = (checkpoint / "README.md").read_text()
    assert "## Retention" in card and "mean token KL" in card
    assert f"{evaluation['text']['all']['kl']:.4f}" in card
    assert f"{evaluation['text']['in_domain']['ppl_cut']:.3f}" in card

    # the sweep covers every domain x size x criterion, plus random
    with open(where["sweep (CSV, JSON, plots)"] / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cells = {(r["plan_domain"], r["criterion"], r["n_experts"]) for r in rows}
    for domain in testbed.testbed_domains():
        for criterion in SWEEP_CRITERIA:
            for n in ("16", "8"):
                assert (domain, criterion, n) in cells
    assert any(r["criterion"] == "random" for r in rows)
    assert (where["site"].parent / "comparison.html").exists()
