"""Fake-unlearning probes: quantization, pruning, relearning, hidden-state probes, capacity; verdicts."""

PROBES = ("quant", "prune", "relearn", "probe", "capacity")
