"""Matplotlib (Agg) PNG plots for reports; each is written atomically."""

from __future__ import annotations

import pathlib
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402

from penrose_jax.reporting import report_json  # noqa: E402


def save_figure(fig: "plt.Figure", path: str | pathlib.Path) -> pathlib.Path:
  """Saves a figure as PNG via a temp file + rename, then closes it.

  Args:
    fig: the figure.
    path: destination .png.

  Returns:
    The destination path.
  """
  try:
    return report_json.write_file_atomic(
        path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
  finally:
    plt.close(fig)


def bar_chart(values: Mapping[str, float], path: str | pathlib.Path, title: str, ylabel: str,
              log: bool = False) -> pathlib.Path:
  """One bar per named value.

  Args:
    values: label -> value.
    path: destination PNG.
    title: figure title.
    ylabel: y-axis label.
    log: logarithmic y axis.

  Returns:
    The PNG path.
  """
  fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(values) + 2), 3.4))
  labels = list(values)
  ax.bar(range(len(labels)), [values[k] for k in labels], color="#4477aa")
  ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if log:
    ax.set_yscale("log")
  for i, k in enumerate(labels):
    ax.annotate(f"{values[k]:.3g}", (i, values[k]), ha="center", va="bottom", fontsize=8)
  return save_figure(fig, path)


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
              path: str | pathlib.Path, title: str, xlabel: str, ylabel: str,
              logy: bool = False, markers: bool = True) -> pathlib.Path:
  """One line per named (x, y) series.

  Args:
    series: label -> (xs, ys).
    path: destination PNG.
    title: figure title.
    xlabel: x-axis label.
    ylabel: y-axis label.
    logy: logarithmic y axis.
    markers: draw point markers.

  Returns:
    The PNG path.
  """
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for label, (xs, ys) in series.items():
    ax.plot(xs, ys, marker="o" if markers else None, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if logy:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def heatmap(matrix: np.ndarray, path: str | pathlib.Path, title: str, xlabel: str, ylabel: str,
            row_labels: Optional[Sequence[str]] = None) -> pathlib.Path:
  """A heatmap (e.g. per-layer hidden-state divergence per method).

  Args:
    matrix: (rows, cols) values.
    path: destination PNG.
    title: figure title.
    xlabel: x-axis label.
    ylabel: y-axis label.
    row_labels: labels of the rows.

  Returns:
    The PNG path.
  """
  matrix = np.asarray(matrix, float)
  fig, ax = plt.subplots(figsize=(6, 0.45 * matrix.shape[0] + 1.6))
  image = ax.imshow(matrix, aspect="auto", cmap="viridis")
  fig.colorbar(image, ax=ax)
  if row_labels is not None:
    ax.set_yticks(range(len(row_labels)), row_labels)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  return save_figure(fig, path)
