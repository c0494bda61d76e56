"""penrose_jax.qa."""
