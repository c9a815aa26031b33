"""Domains and the mapping of benchmark subjects/categories to them.

The mapping reproduces which dataset folders the reference expert-fingerprinting project pooled
into each domain (its published `domains.json`, see ../shared/data/expert-fingerprinting/).
A subject that no domain claims gets the label `all`: a general prompt that only counts in the
pooled ranking. `harmful` has no benchmark of its own (the reference derives it from `safety`).
"""

from __future__ import annotations

from moeprint.errors import MoeprintError
from moeprint.io.names import check_domain
from moeprint.types import ALL

KNOWN_DOMAINS = (
    ALL,
    "science",
    "math",
    "health_or_medicine",
    "law",
    "safety",
    "instruction_following",
    "harmful",
)
GENERAL = ALL

MMLU_SUBJECT_DOMAIN: dict[str, str] = {
    **dict.fromkeys(
        (
            "astronomy college_biology college_chemistry college_physics conceptual_physics electrical_engineering "
            "high_school_biology high_school_chemistry high_school_physics machine_learning virology"
        ).split(),
        "science",
    ),
    **dict.fromkeys(
        (
            "abstract_algebra college_mathematics elementary_mathematics formal_logic "
            "high_school_mathematics high_school_statistics"
        ).split(),
        "math",
    ),
    **dict.fromkeys(
        (
            "anatomy clinical_knowledge college_medicine human_aging human_sexuality medical_genetics "
            "nutrition professional_medicine professional_psychology"
        ).split(),
        "health_or_medicine",
    ),
    **dict.fromkeys("international_law jurisprudence professional_law".split(), "law"),
}

MMLU_PRO_CATEGORY_DOMAIN: dict[str, str] = {
    "biology": "science",
    "chemistry": "science",
    "computer science": "science",
    "engineering": "science",
    "physics": "science",
    "math": "math",
    "health": "health_or_medicine",
    "psychology": "health_or_medicine",
    "law": "law",
}

# SORRY-Bench (2024/06) stores categories as "1".."45"; these are their names, in order (the folder names
# of the published traces). All 45 count as `safety`.
SORRY_BENCH_CATEGORIES = (
    "Personal Insulting Words",
    "Social-group Insulting Words",
    "Threatening Words",
    "Lewd and Obscene Words",
    "Libelous Words",
    "Self-Harm",
    "Violent Crimes",
    "Harassment",
    "Sexual Crimes",
    "Property Crimes",
    "Public Order Crimes",
    "Impersonation",
    "General Advice for System Intrusion, Hacking & Cyber Attacks, Data Privacy and Confidentiality Violations",
    "Malware Code Generation",
    "Fraud, Scams, and Deception",
    "Financial Crimes",
    "Intellectual Property Infringement",
    "Personal Identifiable Information Violations",
    "Illegal Crafting, Manufacturing, and Distribution",
    "Terrorism",
    "Child-related Crimes",
    "Animal-related Crimes",
    "Environmental Crimes",
    "Evasion of Law Enforcement",
    "Human Elimination & World Domination",
    "Advice on Adult Content",
    "Sexual Explicit Content Generation",
    "Non-sexual Explicit Content Generation",
    "Fake News Generation",
    "False Advertising",
    "Advice on Discrimination Behaviors",
    "Military Use",
    "Political Belief Promotion",
    "Ethical Belief Promotion",
    "Religion Promotion",
    "Social Stereotype Promotion",
    "Extremist Content Promotion",
    "Conspiracy Theories Promotion",
    "False Common Knowledge Promotion",
    "Harmful & Unhealthy Behaviors Promotion",
    "Medical Advice",
    "Financial Advice",
    "Legal Consulting Advice",
    "Governance Decision Advice",
    "Dangerous Machinery Operation Advice",
)


def check_domain_name(name: str, where: str = "") -> str:
    return check_domain(name, where)


def check_known(domain: str, allowed: set[str] | frozenset[str], where: str = "") -> str:
    """`domain` if it is known or declared; one clear error otherwise."""
    check_domain_name(domain, where)
    if domain not in allowed:
        raise MoeprintError(
            f"{where}domain {domain!r} is unknown (known: {', '.join(sorted(allowed))}); "
            'declare extra domains in the prompt file ({"declare_domains": [...]} in JSONL, '
            "`# declare_domains: a, b` in CSV)."
        )
    return domain
