"""penrose_jax.data."""
