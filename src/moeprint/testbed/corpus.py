"""The testbed corpus: domain-labelled text from real sources installed offline from Debian and Python.

Domains and where their text comes from (nothing here was written by this project):
- code: Python standard-library source files of the running interpreter (PSF-2.0).
- french / german: Debian manpages-fr / manpages-de, rendered to plain text with `man -l` (GPL-3+).
- law, math, science, health_or_medicine: GCIDE dictionary entries carrying a subject label such as
  (Law), (Math.), (Chem.), (Med.) (Debian dict-gcide, GPL-2+), plus WordNet 3.0 glosses of synsets in the
  matching topic domains (Debian wordnet-base, WordNet licence); general: GCIDE entries without any label.

Each source yields documents (a file, a man page, a dictionary entry). Documents are ordered by the
sha256 of their id, then the first ones fill the test split, the next the calibration split, the rest
train, so the splits never share a document and the build is deterministic for fixed package versions.
Output: `<out>/<domain>/<split>.jsonl` ({"id", "text"} per line) and `<out>/manifest.json`, written last.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory, atomic_write_json
from moeprint.progress import track

SPLITS = ("test", "calibration", "train")
# Split sizes in characters (~4 characters per token with the 4096-token BPE: >= ~32k test tokens).
TEST_CHARS = 150_000
CALIBRATION_CHARS = 100_000
MAX_DOC_CHARS = 12_000  # long files and man pages are cut so no single document dominates a split

GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
MAN_ROOT = Path("/usr/share/man")

# GCIDE subject labels -> mission domain. An entry is used only if all its labels agree.
GCIDE_LABELS = {
    "Law": "law",
    "Eng. Law": "law",
    "Old Law": "law",
    "Civil Law": "law",
    "Scots Law": "law",
    "Math.": "math",
    "Geom.": "math",
    "Alg.": "math",
    "Arith.": "math",
    "Trig.": "math",
    "Calculus": "math",
    "Chem.": "science",
    "Physics": "science",
    "Astron.": "science",
    "Geol.": "science",
    "Elec.": "science",
    "Mech.": "science",
    "Biol.": "science",
    "Min.": "science",
    "Opt.": "science",
    "Meteor.": "science",
    "Med.": "health_or_medicine",
    "Anat.": "health_or_medicine",
    "Physiol.": "health_or_medicine",
    "Surg.": "health_or_medicine",
    "Pharm.": "health_or_medicine",
    "Pathol.": "health_or_medicine",
    "Med": "health_or_medicine",
    "Therapeutics": "health_or_medicine",
}
LABEL_RE = re.compile(r"\(([A-Z][A-Za-z. ]{1,20})\)")

DOMAINS = ("code", "french", "german", "general", "law", "math", "science", "health_or_medicine")
MISSION_DOMAINS = ("law", "math", "science", "health_or_medicine")
# Domains from the same kind of source: comparing selections within a family removes the style/language effect.
SOURCE_FAMILY = {
    "code": "python source",
    "french": "man pages",
    "german": "man pages",
    **{d: "dictionary" for d in ("general", *MISSION_DOMAINS)},
}


@dataclass(frozen=True)
class Source:
    domain: str
    package: str  # Debian package or "python"
    license: str
    describe: str
    documents: Callable[[], Iterator[tuple[str, str]]]  # (doc id, text)


# ---- sources ----------------------------------------------------------------------------------


def python_stdlib_docs() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo")
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in skip for part in rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > 500:
            yield f"python:{rel}", text[:MAX_DOC_CHARS]


def _render_man(path: Path) -> str:
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8", MAN_KEEP_FORMATTING="")
    out = subprocess.run(
        ["man", "-l", "-E", "UTF-8", str(path)], capture_output=True, env=env, timeout=60
    ).stdout.decode("utf-8", errors="replace")
    # Drop backspace overstrikes (bold/underline) the way `col -b` would.
    out = re.sub(r".\x08", "", out)
    return "\n".join(line.rstrip() for line in out.splitlines()).strip()


def man_docs(lang: str) -> Callable[[], Iterator[tuple[str, str]]]:
    def docs() -> Iterator[tuple[str, str]]:
        root = MAN_ROOT / lang
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            text = _render_man(path)
            if len(text) > 500:
                yield f"man-{lang}:{path.relative_to(root)}", text[:MAX_DOC_CHARS]

    return docs


def _gcide_entries() -> Iterator[str]:
    """Dictionary paragraphs (one sense block each), with source tags and pronunciations removed."""
    with gzip.open(GCIDE_DICT, "rt", encoding="utf-8", errors="replace") as f:
        raw = f.read()
    for block in raw.split("\n\n"):
        lines = [ln.strip() for ln in block.splitlines()]
        lines = [ln for ln in lines if ln and not re.fullmatch(r"\[[^\]]*\]", ln)]  # [1913 Webster]
        text = " ".join(lines)
        text = re.sub(r"\\[^\\]{1,60}\\", "", text)  # \Ab"ack\ pronunciation
        text = re.sub(r"\(\[[^)]{0,60}\)", "", text)  # ([a^]b"ak) respelling
        text = re.sub(r"\s+", " ", text).strip()
        if len(text) > 40:
            yield text


_GCIDE_CACHE: dict[str, list[tuple[str, str]]] = {}


def _gcide_by_domain() -> dict[str, list[tuple[str, str]]]:
    if not _GCIDE_CACHE:
        for domain in (*MISSION_DOMAINS, "general"):
            _GCIDE_CACHE[domain] = []
        for n, text in enumerate(_gcide_entries()):
            labels = {m.group(1) for m in LABEL_RE.finditer(text)}
            domains = {GCIDE_LABELS[label] for label in labels if label in GCIDE_LABELS}
            if len(domains) == 1:
                _GCIDE_CACHE[domains.pop()].append((f"gcide:{n}", text))
            elif not domains and not labels:
                _GCIDE_CACHE["general"].append((f"gcide:{n}", text))
    return _GCIDE_CACHE


WORDNET_DIR = Path("/usr/share/wordnet")
# WordNet topic-domain synsets (";c" pointers) -> mission domain
WORDNET_TOPICS = {
    "law": "law",
    "jurisprudence": "law",
    "criminal_law": "law",
    "civil_law": "law",
    "mathematics": "math",
    "statistics": "math",
    "geometry": "math",
    "algebra": "math",
    "arithmetic": "math",
    "trigonometry": "math",
    "calculus": "math",
    "topology": "math",
    "logic": "math",
    "chemistry": "science",
    "physics": "science",
    "biology": "science",
    "geology": "science",
    "astronomy": "science",
    "genetics": "science",
    "biochemistry": "science",
    "meteorology": "science",
    "science": "science",
    "electronics": "science",
    "nuclear_physics": "science",
    "optics": "science",
    "thermodynamics": "science",
    "medicine": "health_or_medicine",
    "anatomy": "health_or_medicine",
    "physiology": "health_or_medicine",
    "pathology": "health_or_medicine",
    "surgery": "health_or_medicine",
    "pharmacology": "health_or_medicine",
    "psychiatry": "health_or_medicine",
    "dentistry": "health_or_medicine",
    "obstetrics": "health_or_medicine",
    "neurology": "health_or_medicine",
    "immunology": "health_or_medicine",
    "ophthalmology": "health_or_medicine",
}


@functools.lru_cache(maxsize=1)
def _wordnet_by_domain() -> dict[str, list[tuple[str, str]]]:
    """Synsets in a WordNet topic domain, as `words: gloss` documents."""
    synsets = []  # (pos, offset, words, topic offsets, gloss)
    noun_names = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET_DIR / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                n_words = int(fields[3], 16)
                words = [w.replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2]]
                i = 4 + 2 * n_words
                n_ptrs = int(fields[i])
                ptrs = [fields[i + 1 + 4 * j : i + 5 + 4 * j] for j in range(n_ptrs)]
                topics = [p[1] for p in ptrs if p[0] == ";c" and p[2] == "n"]
                if pos == "noun":
                    noun_names[fields[0]] = fields[4]
                synsets.append((pos, fields[0], words, topics, gloss.strip()))
    out: dict[str, list[tuple[str, str]]] = {d: [] for d in MISSION_DOMAINS}
    for pos, offset, words, topics, gloss in synsets:
        domains = {WORDNET_TOPICS.get(noun_names.get(t, "")) for t in topics} - {None}
        if len(domains) == 1 and gloss:
            out[domains.pop()].append((f"wordnet:{pos}:{offset}", f"{', '.join(words)}: {gloss}"))
    return out


def gcide_docs(domain: str) -> Callable[[], Iterator[tuple[str, str]]]:
    def docs() -> Iterator[tuple[str, str]]:
        yield from _gcide_by_domain()[domain]
        if domain in MISSION_DOMAINS:
            yield from _wordnet_by_domain()[domain]

    return docs


GCIDE_DESCRIBE = "GCIDE entries labelled {labels}"
SOURCES = (
    Source("code", "python", "PSF-2.0", "Python standard-library source (.py, tests excluded)", python_stdlib_docs),
    Source("french", "manpages-fr", "GPL-3+", "French manual pages rendered with man -l", man_docs("fr")),
    Source("german", "manpages-de", "GPL-3+", "German manual pages rendered with man -l", man_docs("de")),
    Source("general", "dict-gcide", "GPL-2+", "GCIDE entries without a subject label", gcide_docs("general")),
    *(
        Source(
            d,
            "dict-gcide+wordnet-base",
            "GPL-2+ (GCIDE); WordNet 3.0 licence (wordnet-base)",
            GCIDE_DESCRIBE.format(labels=", ".join(f"({k})" for k, v in GCIDE_LABELS.items() if v == d))
            + "; WordNet 3.0 glosses in topic domains "
            + ", ".join(k for k, v in WORDNET_TOPICS.items() if v == d),
            gcide_docs(d),
        )
        for d in MISSION_DOMAINS
    ),
)


# ---- build ------------------------------------------------------------------------------------


def package_version(package: str) -> str:
    if package == "python":
        return sysconfig.get_python_version() + " (" + os.sys.version.split()[0] + ")"
    if "+" in package:
        return "; ".join(f"{p} {package_version(p)}" for p in package.split("+"))
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MoeprintError(
            f"Debian package {package} is not installed; run `apt-get install dict-gcide manpages-fr manpages-de`."
        )
    return proc.stdout.strip()


def split_documents(docs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Order by sha256(id) and fill test, then calibration, then train (by character budget)."""
    ordered = sorted(docs, key=lambda d: hashlib.sha256(d[0].encode()).hexdigest())
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    total = sum(len(t) for _, t in docs)
    # Small domains (math) keep at least 40% of their text for training.
    budgets = {"test": min(TEST_CHARS, int(0.4 * total)), "calibration": min(CALIBRATION_CHARS, int(0.2 * total))}
    filled = {s: 0 for s in SPLITS}
    for doc in ordered:
        split = next((s for s in ("test", "calibration") if filled[s] < budgets[s]), "train")
        out[split].append(doc)
        filled[split] += len(doc[1])
    return out


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_corpus(out_dir: str | Path, overwrite: bool = False, progress: bool = True) -> Path:
    """Extract every domain, split it and write `<out>/<domain>/<split>.jsonl` plus manifest.json."""
    out_dir = Path(out_dir)
    versions = {s.package: package_version(s.package) for s in SOURCES}  # fail before any work
    if not (WORDNET_DIR / "data.noun").exists():
        raise MoeprintError(f"{WORDNET_DIR}/data.noun not found; run `apt-get install wordnet-base`.")
    if not GCIDE_DICT.exists():
        raise MoeprintError(f"{GCIDE_DICT} not found; run `apt-get install dict-gcide`.")
    domains_meta = {}
    with atomic_directory(out_dir, overwrite=overwrite, kind="moeprint-testbed-corpus") as tmp:
        for source in track(SOURCES, "corpus (domains)", progress):
            docs = list(source.documents())
            if not docs:
                raise MoeprintError(f"source for domain {source.domain} ({source.package}) produced no text.")
            splits = split_documents(docs)
            files = {}
            for split, split_docs in splits.items():
                path = tmp / source.domain / f"{split}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    for doc_id, text in split_docs:
                        f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                files[split] = {
                    "path": f"{source.domain}/{split}.jsonl",
                    "documents": len(split_docs),
                    "characters": sum(len(t) for _, t in split_docs),
                    "sha256": _sha256_file(path),
                }
            domains_meta[source.domain] = {
                "source": source.describe,
                "package": source.package,
                "package_version": versions[source.package],
                "license": source.license,
                "splits": files,
            }
        atomic_write_json(
            tmp / "manifest.json",
            {
                "kind": "moeprint-testbed-corpus",
                "split_rule": "documents ordered by sha256(id); first min("
                f"{TEST_CHARS}, 40% of chars) -> test, next min({CALIBRATION_CHARS}, 20%) -> calibration, "
                "rest -> train",
                "max_document_chars": MAX_DOC_CHARS,
                "domains": domains_meta,
                "mission_domains": list(MISSION_DOMAINS),
            },
        )
    return out_dir


def read_split(corpus_dir: str | Path, domain: str, split: str) -> list[str]:
    """Texts of one domain's split from a corpus folder (or the committed data folder)."""
    path = Path(corpus_dir) / domain / f"{split}.jsonl"
    if not path.exists():
        raise MoeprintError(f"{path} not found; is {corpus_dir} a testbed corpus with domain {domain}?")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


LICENSE_FILES = {  # copied next to the committed texts, as their licences require
    "GPL-2": Path("/usr/share/common-licenses/GPL-2"),
    "GPL-3": Path("/usr/share/common-licenses/GPL-3"),
    "PYTHON-LICENSE.txt": Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt",
    "WORDNET-COPYRIGHT": Path("/usr/share/doc/wordnet-base/copyright"),
    "GCIDE-COPYRIGHT": Path("/usr/share/doc/dict-gcide/copyright"),
    "MANPAGES-L10N-COPYRIGHT": Path("/usr/share/doc/manpages-fr/copyright"),
}


def export_eval_texts(corpus_dir: str | Path, data_dir: str | Path) -> Path:
    """Copy the calibration and test splits (the texts that get committed) and their licences to `data_dir`."""
    import shutil

    corpus_dir, data_dir = Path(corpus_dir), Path(data_dir)
    from moeprint.io.atomic import read_json

    manifest = read_json(corpus_dir / "manifest.json")
    with atomic_directory(data_dir, overwrite=True, kind="moeprint-testbed-eval-texts") as tmp:
        for domain, meta in manifest["domains"].items():
            (tmp / domain).mkdir()
            meta["splits"] = {s: v for s, v in meta["splits"].items() if s in ("calibration", "test")}
            for split in meta["splits"]:
                shutil.copyfile(corpus_dir / domain / f"{split}.jsonl", tmp / domain / f"{split}.jsonl")
        (tmp / "licenses").mkdir()
        for name, src in LICENSE_FILES.items():
            if src.exists():
                shutil.copyfile(src, tmp / "licenses" / name)
        manifest["kind"] = "moeprint-testbed-eval-texts"
        manifest["note"] = "calibration and test splits of the testbed corpus; train is rebuilt from Debian packages"
        manifest["corpus_manifest_sha256"] = hashlib.sha256((corpus_dir / "manifest.json").read_bytes()).hexdigest()
        atomic_write_json(tmp / "manifest.json", manifest)
    return data_dir
