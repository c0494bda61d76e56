"""penrose_jax.compression."""
