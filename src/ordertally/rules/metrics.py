"""Prometheus metrics of the rules domain."""

from prometheus_client import Counter

EVALUATIONS = Counter("ordertally_rule_evaluations_total", "Rule conditions evaluated", ["trigger"])
FIRINGS = Counter("ordertally_rule_firings_total", "Rules fired (logged firings)", ["rule"])
