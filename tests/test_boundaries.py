"""Model knowledge lives in `moeprint.adapters`: no other source file names an architecture, a quantisation
layout or a chat format (code, strings, docstrings and comments alike). The forbidden names are built from
the adapters' own declarations, plus literals that a new module might spell without asking them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from moeprint.adapters import ADAPTERS, MoEAdapter
from moeprint.adapters.gpt_oss import GPT_OSS

SRC = Path(__file__).resolve().parents[1] / "src" / "moeprint"
EXEMPT = {
    "adapters": "the one home of model knowledge",
    # The testbed builds specific models: the testbed is a small gpt-oss model trained here and the stand-in
    # reproduces gpt-oss-20b's published files (tensor names, MXFP4 shapes, harmony tokenizer). Those models
    # are its subject, not knowledge the pipeline relies on; the pipeline reaches them through the adapters.
    "testbed": "builds one named family's models",
}
# spellings a file could use without going through a declaration (hub and prose names, class-name stems)
LITERALS = (
    "gpt_oss",
    "gpt-oss",
    "GptOss",
    "mxfp4",
    "_blocks",
    "_scales",
    "harmony",
    "<|channel|>",
    "Mixtral",
    "Qwen3",
    "OLMoE",
    "DeepSeek",
    "GLM-4",
    "ERNIE",
    "MiniMax",
    "Llama-4",
    "Kimi",
)
CLASS_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration")


def declared_names(adapters: list[MoEAdapter]) -> set[str]:
    """Every name an adapter declares that identifies its family, layout or chat format."""
    names: set[str] = set()
    for a in adapters:
        names |= {a.name, a.model_type, a.model_type.replace("_", "-"), *a.text_model_types, *a.fused_moe_classes}
        for arch in a.architectures:
            names.add(arch)
            names |= {arch.removesuffix(s) for s in CLASS_SUFFIXES if arch.endswith(s)}  # the class-name stem
        if a.quantisation is not None:
            q = a.quantisation
            names |= {q.quant_method, q.label, *q.suffixes}
            # a full quantised tensor name (`..._proj` + suffix) hides the suffix behind an identifier character
            leaves = {t.template.rsplit(".", 1)[-1] for t in a.expert_tensors}
            names |= {leaf + s for leaf in leaves for s in q.suffixes}
        if a.chat_format is not None:
            names |= {a.chat_format.name, *a.chat_format.special_tokens}
        names |= {c.hub_id for c in a.checkpoints} | {c.hub_id.rsplit("/", 1)[-1] for c in a.checkpoints}
    return names


def forbidden_pattern(adapters: list[MoEAdapter]) -> re.Pattern[str]:
    names = sorted(declared_names(adapters) | set(LITERALS), key=len, reverse=True)
    # a name may not continue a word or identifier on its left (`moe_blocks` is no `_blocks` suffix)
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, names)) + ")", re.IGNORECASE)


def violations(text: str, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    return [(n, m.group(1)) for n, line in enumerate(text.splitlines(), 1) for m in pattern.finditer(line)]


SOURCE_SUFFIXES = (".py", ".js", ".html", ".css")  # code of the package and of the site it writes (not prompt data)


def checked_files() -> list[Path]:
    return [
        p
        for p in sorted(SRC.rglob("*"))
        if p.suffix in SOURCE_SUFFIXES and p.relative_to(SRC).parts[0] not in EXEMPT and "__pycache__" not in p.parts
    ]


ALL_ADAPTERS = list({id(a): a for a in ADAPTERS.values()}.values())


def test_no_source_outside_adapters_names_a_model_family_or_format():
    files = checked_files()
    assert len(files) > 60 and SRC / "cli.py" in files and SRC / "importers" / "fingerprinting.py" in files
    assert SRC / "report" / "assets" / "tokens.js" in files
    pattern = forbidden_pattern(ALL_ADAPTERS)
    found = [f"{p.relative_to(SRC)}:{n}: {name}" for p in files for n, name in violations(p.read_text(), pattern)]
    assert found == [], "ask the adapter instead:\n" + "\n".join(found)


def test_the_check_catches_names_from_declarations_and_literals():
    pattern = forbidden_pattern(ALL_ADAPTERS)
    source = "\n".join(
        [
            'blocks = adapter.moe_blocks(model)  # "moe_blocks" is no quantised suffix',
            'if name.endswith("_scales"):',
            "w = ckpt['model.layers.0.mlp.experts.gate_up_proj_blocks']",
            '"""Routes like Qwen3MoeForCausalLM."""',
            "if tok == '<|message|>':  # the message marker",
            "model = 'openai/gpt-oss-120b'",
            "fmt = 'MXFP4'",
        ]
    )
    assert violations(source, pattern) == [
        (2, "_scales"),
        (3, "gate_up_proj_blocks"),
        (4, "Qwen3MoeForCausalLM"),
        (5, "<|message|>"),
        (6, "openai/gpt-oss-120b"),
        (7, "MXFP4"),
    ]
    # a family added tomorrow is covered by what it declares, with no edit of this test
    newcomer = dataclasses.replace(
        GPT_OSS, name="zeta_moe", model_type="zeta_moe", architectures=("ZetaMoeForCausalLM",)
    )
    new_pattern = forbidden_pattern([newcomer])
    assert violations("cfg = 'zeta-moe'  # ZetaMoe experts", new_pattern) == [(1, "zeta-moe"), (1, "ZetaMoe")]
    assert violations("cfg = 'zeta-moe'", pattern) == []
