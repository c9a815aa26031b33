"""Publish stage: checkpoint folders -> Hugging Face Hub repos and collections (plan first, then upload).

plan_publish(checkpoints_dir, namespace, private=False, collections=False) -> PublishPlan
publish(plan) -> PublishReport
"""

from moeprint.publish.hub import PublishReport, publish
from moeprint.publish.plan import PublishCollection, PublishFile, PublishItem, PublishPlan, PublishRepo, plan_publish

__all__ = [
    "PublishCollection",
    "PublishFile",
    "PublishItem",
    "PublishPlan",
    "PublishReport",
    "PublishRepo",
    "plan_publish",
    "publish",
]
