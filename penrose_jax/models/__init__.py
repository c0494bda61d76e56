"""Llama-family decoder as a Flax Linen module over a plain params pytree."""
