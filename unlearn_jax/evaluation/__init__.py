"""Evaluation: knowledge metrics, membership inference, side effects."""
