"""penrose_jax.evaluation."""
