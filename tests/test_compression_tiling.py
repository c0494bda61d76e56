"""Tilings: exact coverage, aperiodicity, determinism, tile counts, PNG rendering."""

import os

import numpy as np
import pytest

from penrose_jax.compression import tiling as tl
from penrose_jax.compression.tiling_plot import render_tiling_png

SIZES = [(576, 1536, 64), (577, 191, 16), (1, 5, 4), (8, 8, 4)]


@pytest.mark.parametrize("kind", ["penrose", "grid", "single"])
@pytest.mark.parametrize("m,n,target", SIZES)
def test_exact_coverage(kind, m, n, target):
  t = tl.make_tiling(kind, m, n, target)
  assert (t.m, t.n) == (m, n)
  assert t.is_exact_partition()
  assert t.row_cuts[0] == 0 and t.row_cuts[-1] == m


@pytest.mark.parametrize("m,n,target", SIZES + [(576, 1536, 96), (64, 64, 16), (96, 160, 24)])
def test_penrose_shapes_and_counts(m, n, target):
  t = tl.penrose_layout(m, n, target)
  # The exact two-length solve never needs a remainder tile for these sizes.
  assert t.remainder_axes == ()
  assert len(t.shapes) <= 4
  if m * n >= 64:  # tolerance: +-25% of the target (integer solve of k_r x k_c).
    assert abs(t.num_tiles - target) <= 0.25 * target, t.num_tiles


@pytest.mark.parametrize("m,n,target", [(576, 1536, 64), (576, 1536, 96), (577, 191, 16),
                                        (64, 64, 16), (96, 160, 24), (8, 8, 4)])
def test_penrose_has_no_translation_symmetry(m, n, target):
  assert tl.translation_symmetries(tl.penrose_layout(m, n, target)) == []


def test_detector_finds_grid_periods():
  grid = tl.grid_layout(64, 64, 16)
  sym = tl.translation_symmetries(grid)
  assert (0, 16) in sym and (16, 0) in sym


def test_penrose_band_words_not_periodic():
  t = tl.penrose_layout(576, 1536, 64)
  heights = np.diff(t.row_cuts)
  assert len(set(heights.tolist())) == 2
  words = tl.band_column_words(t)
  assert len(set(words)) == len(words)  # every band has its own column-cut word here.
  assert all(sum(w) == 1536 for w in words)


def test_sturmian_word_minimal_period_bound():
  # The Fibonacci language has critical exponent 2 + phi, so a factor of length L has
  # smallest period > L / (2 + phi): no short period, for any intercept.
  for rho in (0.0, 0.3, 0.77):
    word = tl.sturmian_word(300, rho)
    assert tl.smallest_period(word) > 300 / (2 + tl.GOLDEN)


def test_deterministic_and_phase_dependent():
  a = tl.penrose_layout(320, 512, 40, phase=0)
  assert a == tl.penrose_layout(320, 512, 40, phase=0)
  assert hash(a) == hash(tl.penrose_layout(320, 512, 40, phase=0))
  assert a != tl.penrose_layout(320, 512, 40, phase=1)


def test_unknown_kind_names_allowed():
  with pytest.raises(ValueError, match="hexagon.*penrose"):
    tl.make_tiling("hexagon", 8, 8, 4)


def test_tile_dictionary_cover_and_refusal():
  t = tl.penrose_layout(64, 96, 16, lengths=((16, 8), (16, 8)))
  assert t.is_exact_partition() and {h for h, _ in t.shapes.values()} <= {16, 8}
  with pytest.raises(ValueError, match="cannot exactly cover"):
    tl.penrose_layout(63, 96, 16, lengths=((16, 8), (16, 8)))
  with pytest.raises(ValueError, match="tile_size"):
    tl.grid_layout(63, 96, 16, tile_size=(16, 16))


def test_render_png(tmp_path):
  t = tl.penrose_layout(96, 160, 24)
  path = str(tmp_path / "tiling.png")
  render_tiling_png(t, path, ranks=list(range(t.num_tiles)), title="t")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(tmp_path) == ["tiling.png"]
