"""PNG rendering of a tiling, tiles coloured by rank (matplotlib, Agg backend)."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import cm, colors, patches  # noqa: E402

from penrose_jax.compression.tiling import Tiling  # noqa: E402
from penrose_jax.reporting import report_json  # noqa: E402


def render_tiling_png(tiling: Tiling, path: str, ranks: Optional[Sequence[int]] = None,
                      title: Optional[str] = None) -> str:
  """Draws the tiles of a tiling (rows down, columns across) to a PNG, atomically.

  Args:
    tiling: the tiling.
    path: output .png path (written atomically: `report_json.write_file_atomic`).
    ranks: optional rank per tile (colour); otherwise tiles are coloured by shape id.
    title: optional figure title.

  Returns:
    The path written.
  """
  values = list(ranks) if ranks is not None else [t[4] for t in tiling.tiles]
  if len(values) != tiling.num_tiles:
    raise ValueError(f"got {len(values)} ranks for {tiling.num_tiles} tiles")
  norm = colors.Normalize(vmin=min(values), vmax=max(max(values), min(values) + 1))
  cmap = matplotlib.colormaps["viridis"]
  aspect = tiling.n / max(tiling.m, 1)
  fig, ax = plt.subplots(figsize=(min(12, 3 + 5 * aspect), 5))
  try:
    for (r0, c0, h, w, _), v in zip(tiling.tiles, values):
      ax.add_patch(patches.Rectangle((c0, r0), w, h, facecolor=cmap(norm(v)),
                                     edgecolor="black", linewidth=0.4))
    ax.set_xlim(0, tiling.n)
    ax.set_ylim(tiling.m, 0)
    ax.set_xlabel("output dim (columns)")
    ax.set_ylabel("input dim (rows)")
    ax.set_aspect("equal")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="rank" if ranks is not None else "shape id")
    ax.set_title(title or f"{tiling.kind} tiling {tiling.m}x{tiling.n}, {tiling.num_tiles} tiles")
    report_json.write_file_atomic(path, lambda handle: fig.savefig(handle, dpi=100, format="png"))
  finally:
    plt.close(fig)
  return path
