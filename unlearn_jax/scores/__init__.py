"""Memorization scores (loss, zlib, Min-K%, Min-K%++, exact match) for selection and curricula."""
