"""Choosing which experts a cut keeps (below prune, above analyze).

plan.py      PrunePlan building from rankings, validation against a ModelSignature, plan JSON read/write
sources.py   the one dispatch: run rankings | ranking file | llm-compressor report | random -> PrunePlan
rankings.py  a run's ranking per criterion and domain; random draws
greedy.py    greedy-loss selection with the model in the loop (given a loaded model)
sizes.py     the one sizes grammar (counts, ranges, percentages of the experts)
"""
