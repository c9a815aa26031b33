"""Choosing which experts a cut keeps: plans, rankings, random baselines and greedy-loss selection."""
