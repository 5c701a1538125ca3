"""Diffusion-model unlearning: procedural images → a tiny conditional DDPM → concept erasure (the seed's
objective, ESD) → metrics (UA, IRA, CRA, an FID proxy) → a soft-prompt attack and sequential rebound."""
