"""penrose-jax: compress decoder LLMs with Penrose-tiled low-rank blocks and adapt them to a domain."""

import os as _os

# numpy's work here is many small per-tile SVDs / Choleskys. Multi-threaded OpenBLAS competing
# with XLA's own thread pool made them ~100x slower on the 2-core machine (34 s vs 0.3 s for
# 16 tiles of 144x384), so one BLAS thread is the default; set the variable to override.
# It only takes effect when penrose_jax is imported before numpy loads OpenBLAS.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
