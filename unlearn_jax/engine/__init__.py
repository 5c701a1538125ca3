"""The engine: one training state, one jitted update step, and the loop around it."""
