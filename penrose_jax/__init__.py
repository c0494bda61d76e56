"""penrose-jax: compress decoder LLMs with Penrose-tiled low-rank blocks and adapt them to a domain."""

__version__ = "0.1.0"
