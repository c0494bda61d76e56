"""penrose_jax.reporting."""
