"""Unlearning objectives: pure loss functions over a parameter pytree and token batches."""
