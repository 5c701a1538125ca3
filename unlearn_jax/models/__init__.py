"""The model: a Flax Llama-family decoder, Hugging Face I/O and sharding."""
