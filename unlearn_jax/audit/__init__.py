"""Fake-unlearning probes: quantization, pruning, relearning, hidden-state probes, capacity, adversarial
suffixes (GCG, embedding space); verdicts."""

PROBES = ("quant", "prune", "relearn", "probe", "capacity", "gcg", "embed")
