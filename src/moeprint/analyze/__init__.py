"""Analyze: traces -> fingerprints (mergeable sums), rankings per criterion, statistics, classifier.

Public API for other stages:
    rank_experts(usage_for_domain, criterion, usage_all=None) -> list[list[int]]   (per layer, best first)
    load_fingerprints(run) -> (fingerprints manifest, usage_of(domain | None) -> LayerUsage)
    analyze_run(run, AnalyzeSettings(...)) -> Path of RUN/fingerprints
    moeprint.analyze.fingerprints: the only reader and writer of RUN/fingerprints/ (ranking_path, read_rankings, ...)
    export_rankings(run, criterion, out_dir) -> written files
"""

from moeprint.analyze.aggregate import LayerUsage, PromptCounts, UsageSums, count_usage
from moeprint.analyze.criteria import CRITERIA, expert_scores, interleave, rank_experts, reference_rankings
from moeprint.analyze.fingerprints import load_fingerprints, ranking_path
from moeprint.analyze.pipeline import AnalyzeSettings, analyze_run, export_rankings

__all__ = [
    "CRITERIA",
    "AnalyzeSettings",
    "LayerUsage",
    "PromptCounts",
    "UsageSums",
    "analyze_run",
    "count_usage",
    "expert_scores",
    "export_rankings",
    "interleave",
    "load_fingerprints",
    "rank_experts",
    "ranking_path",
    "reference_rankings",
]
