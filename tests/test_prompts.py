import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from moeprint.errors import MoeprintError
from moeprint.prompts import BUILTIN_SUITE, load_prompts, render_prompt
from moeprint.prompts.benchmarks import load_benchmark
from moeprint.prompts.domains import (
    KNOWN_DOMAINS,
    MMLU_PRO_CATEGORY_DOMAIN,
    MMLU_SUBJECT_DOMAIN,
    SORRY_BENCH_CATEGORIES,
)
from moeprint.record.segments import ChannelSegmenter


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- local files ------------------------------------------------------------------------------


def test_jsonl_text_chat_declared_domain_and_default_ids(tmp_path):
    f = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"declare_domains": ["poetry"]},
            {"text": "Roses are red", "domain": "poetry"},
            {"messages": [{"role": "user", "content": "2+2?"}], "domain": "math", "category": "arith", "id": "q1"},
        ],
    )
    prompts = load_prompts(str(f))
    assert [p.prompt_id for p in prompts] == ["mine:2", "q1"]
    assert prompts[0].text == "Roses are red" and prompts[0].messages is None and prompts[0].domain == "poetry"
    assert prompts[1].messages == ({"role": "user", "content": "2+2?"},) and prompts[1].category == "arith"
    assert [p.prompt_id for p in load_prompts(str(f), domains=["poetry"])] == ["mine:2"]


def test_csv_with_declared_domain(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(
        '# declare_domains: cooking\nid,text,domain,category\na,"How long, roughly, to boil an egg?",cooking,eggs\n'
        "b,Define tort.,law,\n"
    )
    prompts = load_prompts(str(f))
    assert [(p.prompt_id, p.domain, p.category) for p in prompts] == [("a", "cooking", "eggs"), ("b", "law", "")]
    assert prompts[0].text == "How long, roughly, to boil an egg?"


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "no prompts"),
        ('{"text": "x", "domain": "math"}\n{"text": "y", "domain": \n', "not valid JSON"),
        ('{"text": "x", "domain": "poetry"}\n', "unknown"),
        ('{"text": "x"}\n', "missing `domain`"),
        ('{"text": "x", "messages": [], "domain": "law"}\n', "exactly one"),
        ('{"text": "x", "domain": "law", "id": "a"}\n{"text": "y", "domain": "law", "id": "a"}\n', "twice"),
    ],
)
def test_bad_prompt_files(tmp_path, content, match):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(MoeprintError, match=match):
        load_prompts(str(f))


def test_domain_filter_rejects_unknown_names(tmp_path):
    with pytest.raises(MoeprintError, match="'sciense' is unknown"):
        load_prompts("builtin", domains=["sciense"])
    with pytest.raises(MoeprintError, match="not a .jsonl/.csv file"):
        load_prompts("nonsense-source")


def test_builtin_suite_covers_every_domain_offline():
    prompts = load_prompts("builtin")
    by_domain = {d: [p for p in prompts if p.domain == d] for d in KNOWN_DOMAINS}
    for domain in set(KNOWN_DOMAINS) - {"harmful"}:  # harmful is safety reversed, it has no prompts
        assert len(by_domain[domain]) >= 3, domain
    assert BUILTIN_SUITE.exists() and all(p.source == "builtin" for p in prompts)
    assert load_prompts("builtin", domains=["law"], limit=2)[1].domain == "law"


# ---- benchmark loaders on local copies in each dataset's own schema ---------------------------


def test_gpqa_csv(tmp_path):
    f = tmp_path / "gpqa_diamond.csv"
    f.write_text(
        "Record ID,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Subdomain,High-level domain\n"
        'rec1,"Which planet is\nlargest?",Jupiter,Mars,Venus,Mercury,Astrophysics,Physics\n'
    )
    (p,) = load_benchmark("gpqa", f)
    assert (p.prompt_id, p.source, p.category, p.domain) == (
        "gpqa_diamond:rec1",
        "gpqa_diamond",
        "Astrophysics",
        "science",
    )
    text = p.messages[0]["content"]
    assert "Which planet is\nlargest?" in text and all(x in text for x in ("Jupiter", "Mars", "Venus", "Mercury"))
    assert [line[:2] for line in text.splitlines()[-4:]] == ["A.", "B.", "C.", "D."]


def test_mmlu_parquet_dir_maps_subjects(tmp_path):
    d = tmp_path / "all"
    d.mkdir()
    rows = [
        {"question": "Q1", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 0},
        {"question": "Q2", "subject": "marketing", "choices": ["a", "b", "c", "d"], "answer": 1},
        {"question": "Q3", "subject": "jurisprudence", "choices": ["a", "b", "c", "d"], "answer": 2},
    ]
    pq.write_table(pa.Table.from_pylist(rows), d / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), d / "dev-00000-of-00001.parquet")
    prompts = load_benchmark("mmlu", d)
    assert [(p.source, p.category, p.domain) for p in prompts] == [
        ("mmlu_dev", "anatomy", "health_or_medicine"),
        ("mmlu_test", "anatomy", "health_or_medicine"),
        ("mmlu_test", "marketing", "all"),
        ("mmlu_test", "jurisprudence", "law"),
    ]


def test_mmlu_pro_sorry_tulu_polyglot(tmp_path):
    pro = write_jsonl(
        tmp_path / "mmlu_pro_validation.jsonl",
        [
            {
                "question_id": 70,
                "question": "2+2?",
                "options": ["3", "4", "N/A"],
                "answer": "B",
                "answer_index": 1,
                "cot_content": "",
                "category": "math",
                "src": "x",
            },
            {
                "question_id": 71,
                "question": "GDP?",
                "options": ["a", "b"],
                "answer": "A",
                "answer_index": 0,
                "cot_content": "",
                "category": "economics",
                "src": "x",
            },
        ],
    )
    a, b = load_benchmark("mmlu_pro", pro)
    assert (a.prompt_id, a.domain, b.domain, a.source) == (
        "mmlu_pro_validation:70",
        "math",
        "all",
        "mmlu_pro_validation",
    )
    assert "N/A" not in a.messages[0]["content"]

    sorry = write_jsonl(
        tmp_path / "question.jsonl",
        [
            {"question_id": 1, "category": "6", "turns": ["I feel awful."], "prompt_style": "base"},
            {"question_id": 1, "category": "6", "turns": ["1 phyy njshy."], "prompt_style": "caesar"},
        ],
    )
    (s,) = load_benchmark("sorry_bench", sorry)
    assert (s.category, s.domain, s.source, s.messages[0]["content"]) == (
        "Self-Harm",
        "safety",
        "sorry_bench_base",
        "I feel awful.",
    )

    tulu = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "id": "personas_IF_1",
                    "prompt": "Write a haiku in lowercase.",
                    "messages": [
                        {"content": "Write a haiku in lowercase.", "role": "user"},
                        {"content": "ok", "role": "assistant"},
                    ],
                    "constraints": ["change_case:lowercase"],
                }
            ]
        ),
        tulu,
    )
    (t,) = load_benchmark("tulu3_persona_if", tulu)
    assert (t.prompt_id, t.domain, t.category) == (
        "tulu3_persona_if:personas_IF_1",
        "instruction_following",
        "instruction-following",
    )

    poly = write_jsonl(
        tmp_path / "English.jsonl",
        [
            {
                "dataset_id": "c_1",
                "stem": "The capital of France is",
                "true": "Paris",
                "false": "['Lyon', 'Nice']",
                "relation": "P36",
                "subject": "France",
                "object": "Paris",
            },
        ],
    )
    (g,) = load_benchmark("polyglot", poly)
    content = g.messages[0]["content"]
    assert g.domain == "all" and "Paris" in content and "Lyon" in content and "Nice" not in content


def test_benchmark_schema_errors(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(MoeprintError, match="lacks the mmlu column"):
        load_benchmark("mmlu", f)
    with pytest.raises(MoeprintError, match="does not exist"):
        load_prompts("gpqa:" + str(tmp_path / "missing.csv"))


def test_domain_mapping_matches_published_domains(shared_data):
    """Every subject folder of the published traces maps to the domain the reference pooled it into."""
    domains = json.load(open(shared_data / "domains.json"))
    folder_domain = {f: d for d, folders in domains.items() if not d.startswith("_") for f in folders}
    published = json.load(open(shared_data / "data" / "map.json"))
    checks = {
        "mmlu_test": MMLU_SUBJECT_DOMAIN,
        "mmlu_dev": MMLU_SUBJECT_DOMAIN,
        "mmlu_pro_test": MMLU_PRO_CATEGORY_DOMAIN,
    }
    for dataset, table in checks.items():
        for category in published[dataset]:
            assert table.get(category, "all") == folder_domain.get(f"{dataset}/{category}", "all"), (dataset, category)
    assert set(SORRY_BENCH_CATEGORIES) == set(published["sorry_bench_base"])
    assert all(folder_domain[f"sorry_bench_base/{c}"] == "safety" for c in SORRY_BENCH_CATEGORIES)
    for dataset in ("gpqa_diamond", "gpqa_main", "gpqa_extended"):
        assert all(folder_domain[f"{dataset}/{c}"] == "science" for c in published[dataset])
    assert folder_domain["tulu3_persona_if/instruction-following"] == "instruction_following"


# ---- chat rendering and segments ---------------------------------------------------------------


def test_render_passes_reasoning_effort_to_the_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (
        "<|start|>system<|message|>Reasoning: {{ reasoning_effort | default('medium') }}<|end|>"
        "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
    )
    (p,) = load_prompts("builtin", domains=["law"], limit=1)
    assert "Reasoning: high" in render_prompt(tok, p, "high")
    assert "Reasoning: medium" in render_prompt(tok, p, None)
    assert render_prompt(tok, p, "low").endswith("<|start|>assistant")


def test_harmony_channels_become_think_and_answer(tiny_model_dir):
    """The rule imported runs use too (docs/formats.md): a message's header takes its channel's segment,
    the terminator belongs to no message."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = [
        ("<|channel|>analysis<|message|>", "think"),
        ("we think", "think"),
        ("<|end|>", "generated"),
        ("<|start|>assistant<|channel|>final<|message|>", "answer"),
        ("the answer", "answer"),
        ("<|return|>", "generated"),
        ("<|start|>assistant<|channel|>commentary to=functions.f<|message|>", "generated"),
        ("call", "generated"),
    ]
    ids, expected = [], []
    for text, seg in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        expected += [seg] * len(piece)
    assert ChannelSegmenter(tok).segments(ids) == expected


def _mmlu_rows(subject: str, n: int) -> list[dict]:
    return [
        {"question": f"{subject} Q{i}", "subject": subject, "choices": ["a", "b", "c", "d"], "answer": i % 4}
        for i in range(n)
    ]


def test_local_mmlu_snapshot_reads_what_the_hub_path_reads(tmp_path):
    """A local copy laid out like the hub's cais/mmlu: `all/` with test, validation, dev and
    auxiliary_train, beside per-subject folders repeating the same rows. Only all/'s three splits load."""
    root = tmp_path / "mmlu"
    for folder, splits in {
        "all": {"test": 3, "validation": 2, "dev": 1, "auxiliary_train": 5},
        "anatomy": {"test": 3, "validation": 2, "dev": 1},
        "auxiliary_train": {"train": 5},
    }.items():
        (root / folder).mkdir(parents=True)
        for split, n in splits.items():
            pq.write_table(
                pa.Table.from_pylist(_mmlu_rows("anatomy", n)), root / folder / f"{split}-00000-of-00001.parquet"
            )
    prompts = load_benchmark("mmlu", root)
    assert sorted(Counter(p.source for p in prompts).items()) == [
        ("mmlu_dev", 1),
        ("mmlu_test", 3),
        ("mmlu_validation", 2),
    ]
    # a flat folder without `all/`: auxiliary_train is skipped there too, whatever its name says
    flat = tmp_path / "flat"
    flat.mkdir()
    for split, n in {"test": 2, "auxiliary_train": 4}.items():
        pq.write_table(pa.Table.from_pylist(_mmlu_rows("law", n)), flat / f"{split}-00000-of-00001.parquet")
    write_jsonl(flat / "mmlu_train.jsonl", _mmlu_rows("law", 3))
    write_jsonl(flat / "mine.jsonl", _mmlu_rows("law", 1))
    assert sorted(Counter(p.source for p in load_benchmark("mmlu", flat)).items()) == [("mmlu", 1), ("mmlu_test", 2)]
    with pytest.raises(MoeprintError, match="no .csv/.jsonl/.json/.parquet files of split"):
        load_benchmark("mmlu", root / "auxiliary_train")


def test_local_polyglot_snapshot_reads_english_only(tmp_path):
    """Polyglot-or-Not/Fact-Completion's hub layout: data/<Language>-00000-of-00001.parquet, one split per language."""
    data = tmp_path / "polyglot" / "data"
    data.mkdir(parents=True)
    for language, stem in {
        "English": "The capital of France is",
        "French": "La capitale de la France est",
        "German": "Die Hauptstadt von Frankreich ist",
    }.items():
        rows = [{"dataset_id": f"{language}_{i}", "stem": stem, "true": "Paris", "false": "['Lyon']"} for i in range(2)]
        pq.write_table(pa.Table.from_pylist(rows), data / f"{language}-00000-of-00001-0123abcd.parquet")
    prompts = load_benchmark("polyglot", tmp_path / "polyglot")
    assert [p.prompt_id for p in prompts] == [
        "Polyglot-or-Not_Fact-Completion:English_0",
        "Polyglot-or-Not_Fact-Completion:English_1",
    ]
    assert all("The capital of France" in p.messages[0]["content"] for p in prompts)
