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


def _finite(value) -> bool:
  return value is not None and isinstance(value, (int, float)) and bool(np.isfinite(value))


def _set_scale(ax, logy, values: Sequence[float]) -> None:
  """Log y axis for logy=True, or for logy='auto' when positive values span over 20x."""
  positive = [v for v in values if _finite(v) and v > 0]
  if logy == "auto":
    logy = bool(positive) and len(positive) == len([v for v in values if _finite(v)]) and (
        max(positive) / min(positive) > 20)
  if logy:
    ax.set_yscale("log")


def category_plot(categories: Sequence[str], series: Mapping[str, Sequence[Optional[float]]],
                  path: str | pathlib.Path, title: str, ylabel: str,
                  logy: bool | str = False, annotate: bool = True) -> pathlib.Path:
  """Values per labelled category (e.g. pipeline stages), one marked line per series.

  Args:
    categories: x-axis labels, in order.
    series: label -> one value per category (None or non-finite = not measured, left out).
    path: destination PNG.
    title: figure title.
    ylabel: y-axis label.
    logy: logarithmic y axis; 'auto' = when the positive values span more than 20x.
    annotate: write each value beside its point.

  Returns:
    The PNG path.
  """
  fig, ax = plt.subplots(figsize=(max(5.5, 1.5 * len(categories) + 2.5), 3.8))
  for label, values in series.items():
    points = [(i, float(v)) for i, v in enumerate(values) if _finite(v)]
    if not points:
      continue
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", label=label)
    if annotate:
      for x, y in points:
        ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
  ax.set_xticks(range(len(categories)), list(categories))
  ax.set_xlim(-0.4, len(categories) - 0.6)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  _set_scale(ax, logy, [v for values in series.values() for v in values])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def panel_plot(panels: Sequence[Mapping], path: str | pathlib.Path,
               title: Optional[str] = None) -> pathlib.Path:
  """Line panels side by side in one figure (e.g. a loss curve next to a validation curve).

  Args:
    panels: one mapping per panel with 'series' (label -> (xs, ys) or (xs, ys, style), style
      a dict of matplotlib line keywords such as {'linestyle': '--'}), 'title', 'xlabel',
      'ylabel' and optionally 'logy' (bool or 'auto', as in `category_plot`), 'ylim'
      ((low, high); None for a free end), 'note' (small text under the panel) and
      'integer_x' (bool: whole-number x ticks).
    path: destination PNG.
    title: optional figure title above all panels.

  Returns:
    The PNG path.
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for label, item in panel["series"].items():
      xs, ys = item[0], item[1]
      style = {"marker": "o", "markersize": 3.5, **(item[2] if len(item) > 2 else {})}
      points = [(x, float(y)) for x, y in zip(xs, ys) if _finite(y)]
      if points:
        ax.plot(*zip(*points), label=label, **style)
    ax.set_title(panel.get("title", ""), fontsize=10)
    ax.set_xlabel(panel.get("xlabel", ""))
    ax.set_ylabel(panel.get("ylabel", ""))
    _set_scale(ax, panel.get("logy", False),
               [v for item in panel["series"].values() for v in item[1]])
    if panel.get("ylim") is not None:
      ax.set_ylim(*panel["ylim"])
    if panel.get("integer_x"):
      ax.xaxis.get_major_locator().set_params(integer=True)
    if panel.get("note"):
      ax.text(0.0, -0.22, panel["note"], transform=ax.transAxes, fontsize=7, va="top")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return save_figure(fig, path)
