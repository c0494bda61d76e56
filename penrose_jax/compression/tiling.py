"""Tilings: exact partitions of an (m, n) kernel into rectangular rank blocks.

A `Tiling` is a frozen, hashable description (usable as a jit static value) of how a kernel of
shape (m, n) = (in, out) is cut into rectangles. Three kinds:

* `penrose_layout`: a non-periodic, cut-and-project layout. Rows are cut into bands whose
  heights follow a Sturmian (Fibonacci / golden-ratio) word over two lengths {Long, Short};
  each band's columns are cut by another Sturmian word of the same slope whose intercept
  rotates by the golden ratio from band to band. Tiles therefore share edges inside a band,
  there are at most 4 shapes (L/S rows x L/S cols), and no translation with a substantial
  overlap maps the layout onto itself.
* `grid_layout`: the uniform grid with about the same number of tiles.
* `single_layout`: one tile (plain per-matrix SVD).

Exact coverage without a remainder tile: a Sturmian word of length k with slope 1/phi holds
either floor(k/phi) or floor(k/phi) + 1 Longs, and which one depends only on the intercept.
We pick k and the count nL first, solve nL * L + (k - nL) * S = size for integers L > S >= 1
(preferring L / S near phi and multiples of 8/16), and then only use intercepts inside the
interval that yields exactly nL Longs. Every band then sums exactly to n with the same two
lengths, so no band needs a fix-up tile. Only when no exact two-length solution exists near
the requested count (tiny or awkward sizes, or a user tile dictionary) do we fall back to
absorbing the remainder into the last segment, which may add extra shapes (documented in
`Tiling.remainder_axes`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
SLOPE = 1.0 / GOLDEN  # frequency of the Long letter in the Fibonacci word.
TILING_KINDS = ("penrose", "grid", "single")

# A tile is (row0, col0, h, w, shape_id).
Tile = tuple[int, int, int, int, int]


@dataclasses.dataclass(frozen=True)
class Tiling:
  """An exact partition of an (m, n) index space into rectangles.

  Attributes:
    m: rows (input dim of the kernel).
    n: columns (output dim of the kernel).
    row_cuts: band boundaries (0, ..., m).
    tiles: (row0, col0, h, w, shape_id) per tile, band-major.
    kind: the layout kind that produced it.
    remainder_axes: axes ('rows'/'cols') where a remainder segment was needed (extra shapes).
  """

  m: int
  n: int
  row_cuts: tuple[int, ...]
  tiles: tuple[Tile, ...]
  kind: str = "custom"
  remainder_axes: tuple[str, ...] = ()

  @property
  def num_tiles(self) -> int:
    return len(self.tiles)

  @property
  def shapes(self) -> dict[int, tuple[int, int]]:
    """shape_id -> (h, w) for every shape present."""
    return {t[4]: (t[2], t[3]) for t in self.tiles}

  def coverage_counts(self) -> np.ndarray:
    """Returns an (m, n) int array counting how many tiles cover each index."""
    counts = np.zeros((self.m, self.n), np.int32)
    for r0, c0, h, w, _ in self.tiles:
      counts[r0:r0 + h, c0:c0 + w] += 1
    return counts

  def is_exact_partition(self) -> bool:
    """True when every index of the (m, n) space is covered exactly once."""
    if any(h <= 0 or w <= 0 for _, _, h, w, _ in self.tiles):
      return False
    if sum(h * w for _, _, h, w, _ in self.tiles) != self.m * self.n:
      return False
    return bool(np.all(self.coverage_counts() == 1))


def sturmian_word(k: int, intercept: float) -> list[bool]:
  """Returns the rotation word of slope 1/phi: True = Long, for j = 0..k-1.

  Args:
    k: word length.
    intercept: rotation intercept in [0, 1).

  Returns:
    k booleans; their count of True is floor(k / phi + intercept).
  """
  j = np.arange(k + 1, dtype=np.float64)
  levels = np.floor(j * SLOPE + intercept)
  return [bool(x) for x in np.diff(levels) > 0]


def _intercept_interval(k: int, n_long: int) -> Optional[tuple[float, float]]:
  """Intercepts in [0, 1) giving exactly n_long Longs in a length-k word, or None."""
  base = math.floor(k * SLOPE)
  frac = k * SLOPE - base
  if n_long == base:
    return (0.0, 1.0 - frac)
  if n_long == base + 1:
    return (1.0 - frac, 1.0)
  return None


def _word_with_count(k: int, n_long: int, rotation: float) -> list[bool]:
  """Sturmian word with exactly n_long Longs; `rotation` in [0,1) picks the intercept."""
  lo, hi = _intercept_interval(k, n_long)
  # Stay strictly inside the interval so float rounding cannot flip the count.
  eps = 1e-9 * max(1.0, k)
  rho = lo + eps + (hi - lo - 2 * eps) * (rotation % 1.0)
  word = sturmian_word(k, rho)
  if sum(word) != n_long:  # pragma: no cover - guarded by eps, kept as a hard check.
    raise AssertionError(f"Sturmian count mismatch k={k} n_long={n_long}")
  return word


def _length_score(long: int, short: int, k: int, k_target: float) -> float:
  """Lower is better: count close to target, L/S near phi, lengths multiples of 8/16."""
  score = 2.0 * abs(math.log(k / k_target))
  if long > short:
    score += abs(math.log(long / short / GOLDEN))
  elif k > 1:
    score += 1.0  # a single length makes the axis periodic: only accept when forced.
  for x in (long, short):
    score += 0.15 * (x % 8 != 0) + 0.05 * (x % 16 != 0)
  return score


def solve_axis(size: int, k_target: float,
               lengths: Optional[tuple[int, int]] = None) -> Optional[tuple[int, int, int, int]]:
  """Finds (k, n_long, L, S) with n_long * L + (k - n_long) * S == size exactly.

  Args:
    size: axis length to cover.
    k_target: desired number of segments.
    lengths: optional fixed (L, S) tile dictionary for this axis.

  Returns:
    (k, n_long, L, S) of the best exact solution, or None when there is none.
  """
  k_target = max(1.0, min(float(size), k_target))
  if lengths is not None:
    long, short = lengths
    if long <= 0 or short <= 0:
      return None
    best = None
    for k in range(1, size // min(long, short) + 1):
      base = math.floor(k * SLOPE)
      for n_long in (base, base + 1):
        if n_long > k or n_long * long + (k - n_long) * short != size:
          continue
        score = abs(math.log(k / k_target))
        if best is None or score < best[0]:
          best = (score, (k, n_long, long, short))
    return None if best is None else best[1]
  if size == 1 or k_target < 1.5:
    return (1, 1, size, size)
  k_lo = max(2, int(math.floor(k_target / 1.5)))
  k_hi = min(size, int(math.ceil(k_target * 1.5)))
  best = None
  for k in range(k_lo, k_hi + 1):
    base = math.floor(k * SLOPE)
    for n_long in (base, base + 1):
      n_short = k - n_long
      if n_long <= 0 or n_long > k:
        continue
      if n_short == 0:
        if size % k == 0:
          cand = [(size // k, size // k)]
        else:
          cand = []
      else:
        shorts = np.arange(1, size // k + 1)
        rem = size - n_short * shorts
        ok = (rem % n_long == 0) & (rem // n_long > shorts)
        cand = [(int(r // n_long), int(s)) for r, s in zip(rem[ok], shorts[ok])]
      for long, short in cand:
        score = _length_score(long, short, k, k_target)
        if best is None or score < best[0]:
          best = (score, (k, n_long, long, short))
  return None if best is None else best[1]


def _segments(size: int, k_target: float, rotation: float,
              lengths: Optional[tuple[int, int]], solution=None) -> tuple[list[int], list[bool], bool]:
  """Segment lengths, Long flags and whether a remainder was used, for one axis word."""
  sol = solution if solution is not None else solve_axis(size, k_target, lengths)
  if sol is not None:
    k, n_long, long, short = sol
    if k == 1:
      return [size], [True], False
    word = _word_with_count(k, n_long, rotation)
    return [long if is_long else short for is_long in word], word, False
  if lengths is not None:
    raise ValueError(f"tile dictionary lengths {lengths} cannot exactly cover an axis of size "
                     f"{size} with a Fibonacci word")
  # Remainder fallback: lengths in golden ratio, last segment absorbs the difference.
  k = max(1, int(round(k_target)))
  while k > 1:
    n_long = round(k * SLOPE)
    short = max(1, int(round(size / (n_long * GOLDEN + (k - n_long)))))
    long = max(short + 1, int(round(short * GOLDEN)))
    word = sturmian_word(k, rotation % 1.0)
    segs = [long if x else short for x in word]
    segs[-1] += size - sum(segs)
    if segs[-1] >= 1:
      return segs, word, True
    k -= 1
  return [size], [True], False


def _shape_ids(row_lengths: Sequence[int], col_lengths: Sequence[Sequence[int]]):
  """Maps (h, w) to ids: distinct lengths sorted descending per axis; id = ri * ncols + ci."""
  rows = sorted(set(row_lengths), reverse=True)
  cols = sorted({w for band in col_lengths for w in band}, reverse=True)
  return lambda h, w: rows.index(h) * len(cols) + cols.index(w)


def _grid_counts(m: int, n: int, target_tiles: int) -> tuple[float, float]:
  """Band and per-band tile counts giving roughly square tiles and target_tiles in total."""
  target = max(1, int(target_tiles))
  k_r = math.sqrt(target * m / n)
  k_r = min(max(1.0, k_r), float(m), float(target))
  k_c = min(max(1.0, target / round(k_r)), float(n))
  return k_r, k_c


def _check_dims(m: int, n: int, target_tiles: int) -> None:
  if not (isinstance(m, (int, np.integer)) and isinstance(n, (int, np.integer)) and m > 0 and n > 0):
    raise ValueError(f"tiling shape must be positive ints, got ({m!r}, {n!r})")
  if int(target_tiles) < 1:
    raise ValueError(f"target_tiles must be >= 1, got {target_tiles!r}")


def penrose_layout(m: int, n: int, target_tiles: int, phase: float = 0,
                   lengths: Optional[tuple[tuple[int, int], tuple[int, int]]] = None) -> Tiling:
  """Non-periodic golden-ratio cut-and-project layout of an (m, n) matrix.

  Args:
    m: rows (input dim).
    n: columns (output dim).
    target_tiles: desired number of tiles (met to within the tolerance of the integer solve,
      typically +-25%; exactly when sizes allow).
    phase: deterministic phase; different phases give different (equally valid) layouts.
    lengths: optional tile dictionary ((row_long, row_short), (col_long, col_short)); raises
      ValueError when it cannot exactly cover the matrix.

  Returns:
    The Tiling (kind 'penrose').
  """
  _check_dims(m, n, target_tiles)
  k_r, k_c = _grid_counts(m, n, target_tiles)
  row_len = lengths[0] if lengths is not None else None
  col_len = lengths[1] if lengths is not None else None
  rows, _, row_rem = _segments(m, k_r, (phase * GOLDEN + 0.5) % 1.0, row_len)
  col_solution = solve_axis(n, max(1.0, target_tiles / len(rows)), col_len)
  band_cols, col_rem = [], False
  for b in range(len(rows)):
    # Golden rotation of the intercept from band to band: the per-band words never repeat
    # in a periodic pattern, which is what breaks every vertical translation symmetry.
    rotation = (phase * GOLDEN + (b + 1) * GOLDEN) % 1.0
    segs, _, rem = _segments(n, target_tiles / len(rows), rotation, col_len, col_solution)
    band_cols.append(segs)
    col_rem = col_rem or rem
  shape_id = _shape_ids(rows, band_cols)
  tiles, r0 = [], 0
  for h, segs in zip(rows, band_cols):
    c0 = 0
    for w in segs:
      tiles.append((r0, c0, h, w, shape_id(h, w)))
      c0 += w
    r0 += h
  cuts = tuple(int(x) for x in np.concatenate([[0], np.cumsum(rows)]))
  rem_axes = tuple(a for a, f in (("rows", row_rem), ("cols", col_rem)) if f)
  return Tiling(int(m), int(n), cuts, tuple(tiles), "penrose", rem_axes)


def grid_layout(m: int, n: int, target_tiles: int,
                tile_size: Optional[tuple[int, int]] = None) -> Tiling:
  """Uniform grid with about target_tiles tiles (sizes differ by at most 1 per axis).

  Args:
    m: rows.
    n: columns.
    target_tiles: desired number of tiles.
    tile_size: optional exact (h, w); must divide (m, n) or ValueError.

  Returns:
    The Tiling (kind 'grid'); at most 4 shapes (q+1 / q lengths per axis).
  """
  _check_dims(m, n, target_tiles)
  if tile_size is not None:
    h, w = tile_size
    if h <= 0 or w <= 0 or m % h or n % w:
      raise ValueError(f"grid tile_size {tile_size} cannot exactly cover a ({m}, {n}) matrix")
    k_r, k_c = m // h, n // w
  else:
    fr, fc = _grid_counts(m, n, target_tiles)
    k_r = max(1, min(m, int(round(fr))))
    k_c = max(1, min(n, int(round(target_tiles / k_r))))
  rows = [len(a) for a in np.array_split(np.arange(m), k_r)]
  cols = [len(a) for a in np.array_split(np.arange(n), k_c)]
  shape_id = _shape_ids(rows, [cols])
  tiles, r0 = [], 0
  for h in rows:
    c0 = 0
    for w in cols:
      tiles.append((r0, c0, h, w, shape_id(h, w)))
      c0 += w
    r0 += h
  cuts = tuple(int(x) for x in np.concatenate([[0], np.cumsum(rows)]))
  return Tiling(int(m), int(n), cuts, tuple(tiles), "grid")


def single_layout(m: int, n: int) -> Tiling:
  """One tile covering the whole matrix."""
  _check_dims(m, n, 1)
  return Tiling(int(m), int(n), (0, int(m)), ((0, 0, int(m), int(n), 0),), "single")


def make_tiling(kind: str, m: int, n: int, target_tiles: int = 16, phase: float = 0,
                lengths=None) -> Tiling:
  """Dispatches on the layout kind.

  Args:
    kind: 'penrose', 'grid' or 'single'.
    m: rows.
    n: columns.
    target_tiles: desired tile count (ignored for 'single').
    phase: penrose phase.
    lengths: penrose tile dictionary ((rL, rS), (cL, cS)) or grid tile size (h, w).

  Returns:
    The Tiling.
  """
  if kind == "penrose":
    return penrose_layout(m, n, target_tiles, phase, lengths)
  if kind == "grid":
    return grid_layout(m, n, target_tiles, lengths)
  if kind == "single":
    return single_layout(m, n)
  raise ValueError(f"unknown tiling kind {kind!r}; allowed kinds: {list(TILING_KINDS)}")


def band_column_words(tiling: Tiling) -> list[tuple[int, ...]]:
  """Per-band sequence of tile widths (the column-cut word of each band)."""
  words: dict[int, list[int]] = {}
  for r0, _, _, w, _ in tiling.tiles:
    words.setdefault(r0, []).append(w)
  return [tuple(words[r0]) for r0 in tiling.row_cuts[:-1]]


def translation_symmetries(tiling: Tiling, min_overlap: float = 0.5) -> list[tuple[int, int]]:
  """Nonzero translations that map the tile set onto itself on a substantial overlap.

  A finite patch always agrees with a shift of itself on a tiny overlap, so a meaningful
  test restricts the shift to |dr| <= (1 - min_overlap) * m and |dc| <= (1 - min_overlap) * n
  and requires the tiles lying inside the overlap window to coincide after shifting.
  A periodic grid returns its lattice of periods; a penrose layout should return [].

  Args:
    tiling: the tiling.
    min_overlap: minimal overlap fraction per axis.

  Returns:
    List of (dr, dc) symmetries.
  """
  tiles = {(r0, c0, h, w) for r0, c0, h, w, _ in tiling.tiles}
  max_dr = int((1 - min_overlap) * tiling.m)
  max_dc = int((1 - min_overlap) * tiling.n)
  r_origins = sorted({t[0] for t in tiles})
  c_origins = sorted({t[1] for t in tiles})
  drs = sorted({b - a for a in r_origins for b in r_origins if abs(b - a) <= max_dr})
  dcs = sorted({b - a for a in c_origins for b in c_origins if abs(b - a) <= max_dc})
  found = []
  for dr in drs:
    for dc in dcs:
      if dr == 0 and dc == 0:
        continue
      # Overlap window (in source coordinates) of the tiling and its shift by (dr, dc).
      r_lo, r_hi = max(0, -dr), min(tiling.m, tiling.m - dr)
      c_lo, c_hi = max(0, -dc), min(tiling.n, tiling.n - dc)
      inside = {t for t in tiles
                if t[0] >= r_lo and t[0] + t[2] <= r_hi and t[1] >= c_lo and t[1] + t[3] <= c_hi}
      if not inside:
        continue
      target = {t for t in tiles if t[0] >= r_lo + dr and t[0] + t[2] <= r_hi + dr
                and t[1] >= c_lo + dc and t[1] + t[3] <= c_hi + dc}
      if {(a + dr, b + dc, h, w) for a, b, h, w in inside} == target:
        found.append((dr, dc))
  return found


def smallest_period(seq: Sequence) -> int:
  """Smallest p >= 1 with seq[i] == seq[i + p] for all i (len(seq) when none is smaller)."""
  n = len(seq)
  for p in range(1, n):
    if all(seq[i] == seq[i + p] for i in range(n - p)):
      return p
  return n
