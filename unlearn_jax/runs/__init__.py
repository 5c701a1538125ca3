"""Runs: the pipeline stages behind each command, each writing a run directory."""
