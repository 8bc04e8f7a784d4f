"""Vision-language-model judges as metrics: an OpenAI-compatible client, protocols as data, reply parsers that
never guess, and a response cache. See docs/judges.md."""

from editlab.metrics.judge.metric import JudgeMetric

__all__ = ["JudgeMetric"]
