"""Shared builders for the prune tests: rankings, run folders and plans written the way other stages write them."""

from __future__ import annotations

import json
import random
from pathlib import Path

from moeprint.adapters import load_config_dict
from moeprint.select.plan import model_signature, plan_from_ranking


def random_ranking(num_layers: int, num_experts: int, seed: int = 0) -> dict[str, list[int]]:
    rng = random.Random(seed)
    out = {}
    for layer in range(num_layers):
        ids = list(range(num_experts))
        rng.shuffle(ids)
        out[f"layer_{layer}"] = ids
    return out


def write_run(root: Path, model_dir: Path, domains=("law", "math"), criteria=("frequency", "reap")) -> Path:
    """A finished run as record + analyze leave it: manifest.json and fingerprints/rankings/<criterion>/<domain>.json."""
    config = load_config_dict(model_dir)
    n_layers, n_experts = config["num_hidden_layers"], config["num_local_experts"]
    rankings = root / "fingerprints" / "rankings"
    for c, criterion in enumerate(criteria):
        for d, domain in enumerate(domains):
            (rankings / criterion).mkdir(parents=True, exist_ok=True)
            ranking = random_ranking(n_layers, n_experts, seed=100 * c + d)
            (rankings / criterion / f"{domain}.json").write_text(json.dumps(ranking))
    (root / "fingerprints" / "manifest.json").write_text(
        json.dumps({"criteria": list(criteria), "domains": list(domains)})
    )
    manifest = {
        "kind": "recorded",
        "model": str(model_dir),
        "architecture": config["architectures"][0],
        "num_layers": n_layers,
        "num_experts": n_experts,
        "top_k": config["num_experts_per_tok"],
        "domains": list(domains),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def make_plan(model_dir: Path, n_experts: int, seed: int = 0, domain: str = "law"):
    config = load_config_dict(model_dir)
    ranking = random_ranking(config["num_hidden_layers"], config["num_local_experts"], seed)
    return plan_from_ranking(
        ranking, n_experts, model_signature(config), base_model=str(model_dir), domain=domain, criterion="test"
    )


def main_in_process(capsys, *args) -> tuple[int, str]:
    """Call the console-script function `moeprint.cli.main` in this process (fast); returns (exit code, stderr)."""
    from moeprint.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    return code, err


def assert_error_line(code: int, stderr: str, message: str) -> None:
    assert code != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), stderr
    assert message in lines[-1], stderr


def read_tensors(path: Path) -> dict:
    """Every tensor of a model folder (all shards), read with plain safetensors."""
    from safetensors import safe_open

    from moeprint.io.shards import list_tensors

    out = {}
    for info in list_tensors(path):
        with safe_open(path / info.shard, framework="pt") as f:
            out[info.name] = f.get_tensor(info.name)
    return out
