"""On-disk cache of pass-1 tile spectra, shared by compress runs that only differ after pass 1.

The global rank allocation needs the singular values of every tile of every selected kernel
(`streaming.scan_spectra`: a calibration forward through the dense model plus one SVD per tile,
about a third of a compress run on SmolLM2-135M). Those spectra depend on the model, the
calibration windows and the fields below (`SPECTRA_FIELDS`), not on the budget, the spectral
coding or the quantization of the stored values, so a sweep over param_ratio or quantize can
compute them once. Files are keyed by a hash of exactly those inputs; a changed input is a
different file, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

from penrose_jax.compression import rank_blocks
from penrose_jax.compression.transform import CompressionConfig
from penrose_jax.reporting import report_json

# CompressionConfig fields that change pass-1 spectra (everything else acts after them).
SPECTRA_FIELDS = ("include", "exclude", "method", "tiling", "tiles_per_matrix", "tile_lengths",
                  "phase", "whiten", "damping", "svd_method")
_FORMAT = 1


def cache_key(model: str, calibration: Mapping[str, Any], cfg: CompressionConfig) -> str:
  """Hash of everything the pass-1 spectra depend on.

  Args:
    model: the model spec as given in the config (path or 'default').
    calibration: the calibration config as a plain dict (sources, windows, window length...).
    cfg: the compression config.

  Returns:
    A 20-character hex key.
  """
  fields = {name: getattr(cfg, name) for name in SPECTRA_FIELDS}
  if cfg.tiling == "single":  # one tile whatever the tile settings: runs share the key
    fields.update(tiles_per_matrix=None, tile_lengths=None, phase=None)
  blob = json.dumps({"format": _FORMAT, "model": model, "calibration": dict(calibration),
                     "compression": fields}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(directory: str | os.PathLike, key: str) -> pathlib.Path:
  """The cache file for `key` in `directory`.

  Args:
    directory: the cache folder.
    key: from `cache_key`.

  Returns:
    DIRECTORY/spectra_<key>.npz.
  """
  return pathlib.Path(directory) / f"spectra_{key}.npz"


def save(path: str | os.PathLike, spectra: Mapping[str, list[rank_blocks.TileSpectrum]]
         ) -> None:
  """Writes spectra atomically (`report_json.write_file_atomic`).

  Args:
    path: target .npz file (its folder is created).
    spectra: param path -> TileSpectrum list, as `streaming.scan_spectra` returns.
  """
  manifest, arrays = [], {}
  for path_key, tiles in spectra.items():
    for tile in tiles:
      arrays[f"sigma_{len(manifest)}"] = np.asarray(tile.sigma, np.float64)
      manifest.append({"path": path_key, "h": tile.h, "w": tile.w, "weight": tile.weight,
                       "key": list(tile.key), "tail_energy": tile.tail_energy})
  arrays["manifest"] = np.array(json.dumps({"format": _FORMAT, "tiles": manifest}))
  report_json.write_file_atomic(path, lambda handle: np.savez(handle, **arrays))


def load(path: str | os.PathLike) -> dict[str, list[rank_blocks.TileSpectrum]]:
  """Reads spectra written by `save`.

  Args:
    path: the .npz file.

  Returns:
    Param path -> TileSpectrum list, equal to what was saved.

  Raises:
    ValueError: naming the file when it is not a spectra cache of this format.
  """
  try:
    with np.load(path) as data:
      manifest = json.loads(str(data["manifest"]))
      if manifest.get("format") != _FORMAT:
        raise ValueError(f"format {manifest.get('format')!r}, expected {_FORMAT}")
      sigmas = [data[f"sigma_{i}"] for i in range(len(manifest["tiles"]))]
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"{path}: not a readable spectra cache ({e}); delete it to recompute"
                     ) from None
  spectra: dict[str, list[rank_blocks.TileSpectrum]] = {}
  for tile, sigma in zip(manifest["tiles"], sigmas):
    spectra.setdefault(tile["path"], []).append(rank_blocks.TileSpectrum(
        int(tile["h"]), int(tile["w"]), sigma, float(tile["weight"]), tuple(tile["key"]),
        float(tile["tail_energy"])))
  return spectra

