"""The bytes allocator: candidate grammar and bytes, the bytes knapsack, the compress job."""

import itertools
import json

import numpy as np
import pytest

from configs import compress as compress_config
from configs import sweep_bytes
from penrose_jax.compression import bytes_allocation, candidates, sensitivity
from penrose_jax.compression.transform import as_compression_config
from penrose_jax.jobs import compress


def _tables(kl, size):
  """Candidate tables from {key: {path: KL}} and {key: {path: bytes}}."""
  return {k: {"kl": kl[k], "bytes": size[k]} for k in kl}


def test_knapsack_prefers_the_lower_kl_candidate_when_bytes_tie():
  shapes = {"a": (10, 10), "b": (10, 10)}  # 800 float32 bytes
  kl = {"rtn:int4": {"a": 0.5, "b": 0.4}, "gptq:int4": {"a": 0.2, "b": 0.1}}
  size = {"rtn:int4": {"a": 100, "b": 100}, "gptq:int4": {"a": 100, "b": 100}}
  for menu in (["rtn:int4", "gptq:int4"], ["gptq:int4", "rtn:int4"]):
    plan = bytes_allocation.allocate(_tables(kl, size), shapes, 0.25, menu, unit=1)
    assert plan["choices"] == {"a": "gptq:int4", "b": "gptq:int4"}
    assert plan["bytes_planned"] == 200 and plan["kl_planned"] == pytest.approx(0.3)


def test_knapsack_spends_bytes_where_they_buy_the_most_kl():
  shapes = {"a": (10, 10), "b": (10, 10)}
  kl = {"int3": {"a": 0.9, "b": 0.2}, "int4": {"a": 0.1, "b": 0.1}}
  size = {"int3": {"a": 80, "b": 80}, "int4": {"a": 100, "b": 100}}
  plan = bytes_allocation.allocate(_tables(kl, size), shapes, 0.225, ["int3", "int4"], unit=1)
  assert plan["choices"] == {"a": "int4", "b": "int3"}  # 180 bytes <= 0.225 x 800
  assert plan["bytes_planned"] <= plan["bytes_budget"] == 180


def test_negative_kl_noise_counts_as_zero():
  shapes = {"a": (10, 10)}
  kl = {"int4": {"a": -1e-7}, "int8": {"a": 0.0}}
  size = {"int4": {"a": 100}, "int8": {"a": 200}}
  plan = bytes_allocation.allocate(_tables(kl, size), shapes, 1.0, ["int8", "int4"], unit=1)
  # Equal (zero) KL: the cheaper candidate, and no negative KL in the plan.
  assert plan["choices"] == {"a": "int4"} and plan["kl_planned"] == 0.0


def test_knapsack_equals_brute_force_and_respects_the_budget():
  rng = np.random.default_rng(0)
  menu = ["c0", "c1", "c2"]
  for _ in range(20):
    paths = [f"m{i}" for i in range(5)]
    shapes = {p: (int(rng.integers(4, 12)), 8) for p in paths}
    size = {k: {p: int(rng.integers(5, 60)) for p in paths} for k in menu}
    kl = {k: {p: float(rng.random()) for p in paths} for k in menu}
    ratio = float(rng.uniform(0.15, 0.6))
    dense = 4 * sum(a * b for a, b in shapes.values())
    feasible = [ch for ch in itertools.product(menu, repeat=len(paths))
                if sum(size[k][p] for p, k in zip(paths, ch)) <= ratio * dense]
    if not feasible:
      with pytest.raises(ValueError, match="bytes_ratio"):
        bytes_allocation.allocate(_tables(kl, size), shapes, ratio, menu, unit=1)
      continue
    plan = bytes_allocation.allocate(_tables(kl, size), shapes, ratio, menu, unit=1)
    assert plan["bytes_planned"] <= ratio * dense
    best = min(sum(kl[k][p] for p, k in zip(paths, ch)) for ch in feasible)
    assert plan["kl_planned"] == pytest.approx(best)
    # Coarser units round costs up: still within the budget.
    coarse = bytes_allocation.allocate(_tables(kl, size), shapes, ratio, menu, unit=7) \
        if any(sum(-(-size[k][p] // 7) * 7 for p, k in zip(paths, ch)) <= ratio * dense
               for ch in feasible) else None
    if coarse is not None:
      assert coarse["bytes_planned"] <= ratio * dense


def test_param_knapsack_still_matches_through_the_shared_dp():
  table = {"a": {"0.5": 0.9}, "b": {"0.5": 0.1}}
  ratios = sensitivity.knapsack_ratios(table, {"a": 100, "b": 100}, 0.75, (0.5, 1.0), unit=1)
  assert ratios == {"a": 1.0, "b": 0.5}


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (40, 24)])
def test_candidate_bytes_equal_the_built_leaf_nbytes(shape):
  rng = np.random.default_rng(1)
  w = rng.standard_normal(shape).astype(np.float32)
  x = rng.standard_normal((256, shape[0]))
  gram = x.T @ x
  cfg = as_compression_config({"whiten": True, "damping": 1e-4, "min_rank": 1,
                               "group_size": 16})
  menu = candidates.parse_all(["gptq:int4", "gptq:int3+r4", "rtn:int8", "rtn:int4",
                               "lowrank0.5:int8", "lowrank0.3:none"])
  for cand, leaf, _ in candidates.build_all(w, menu, gram, cfg):
    assert candidates.nbytes(shape, cand, cfg) == leaf.nbytes(), cand.key
  # The GPTQ leaf stores exactly what RTN stores (the shape accounting builds RTN for it).
  gptq_leaf, _ = candidates.build(w, candidates.parse("gptq:int4"), gram, cfg)
  rtn_leaf, _ = candidates.build(w, candidates.parse("rtn:int4"), None, cfg)
  assert gptq_leaf.nbytes() == rtn_leaf.nbytes()


def test_candidate_texts_round_trip_and_the_default_menu():
  for text in ("gptq:int4", "gptq:int3+r16", "rtn:int8", "lowrank0.8:int8", "lowrank0.6:none"):
    assert candidates.parse(text).key == text
  assert [c.key for c in candidates.parse_all(())] == list(candidates.DEFAULT_CANDIDATES)
  assert [c.key for c in candidates.parse_all("rtn:int4, gptq:int3")] == ["rtn:int4",
                                                                            "gptq:int3"]


@pytest.mark.parametrize("items", [("gptq:int5",), ("lowrank1.2:int8",), ("lowrank0.8:int8+r4",),
                                   ("rtn:none",), ("gptq",), ("gptq:int4+r0",),
                                   ("gptq:int4", "gptq:int4"), (3,)])
def test_a_bad_candidate_names_the_field_and_the_expected_form(items):
  with pytest.raises(ValueError, match=r"config\.bytes_candidates"):
    as_compression_config({"bytes_candidates": items})


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.1", True])
def test_a_bad_bytes_ratio_names_the_field(value):
  with pytest.raises(ValueError, match=r"config\.bytes_ratio=.*\[0, 1\]"):
    as_compression_config({"bytes_ratio": value})


def _quick(ratio, menu):
  config = compress_config.get_config("quick_alloc")
  config.compression.bytes_ratio = ratio
  config.compression.bytes_candidates = menu
  config.compression.sensitivity_windows = 2
  config.calibration.num_windows = 4
  config.eval.enabled = False
  config.tiling_pictures = ""
  return config


MENU = tuple(compress_config.get_config("quick_alloc").compression.bytes_candidates)


def test_compress_job_keeps_the_bytes_budget_and_reports_the_choices(tmp_path):
  report = compress.run(_quick(0.17, MENU), tmp_path / "run",
                        spectra_cache_dir=tmp_path / "cache")
  alloc = report["bytes_allocation"]
  rows = report["matrices"]
  assert len(alloc["choices"]) == len(rows) == 14
  assert report["bytes_compressed"] <= 0.17 * report["bytes_dense"]
  assert report["bytes_ratio_achieved"] == pytest.approx(
      report["bytes_compressed"] / report["bytes_dense"]) and alloc["bytes_ratio_target"] == 0.17
  # Built bytes are the planned bytes of each matrix's choice (the accounting agrees).
  assert alloc["bytes_mismatch"] == [] and alloc["bytes_built"] == alloc["bytes_planned"]
  for row in rows:
    assert row["choice"] == alloc["choices"][row["name"]] and row["choice"] in MENU
    assert row["bytes"] == alloc["bytes"][row["name"]][row["choice"]]
  assert len(set(alloc["choices"].values())) >= 2  # a mix, not one width everywhere
  assert set(alloc["kl"][rows[0]["name"]]) == set(MENU)
  assert "sensitivity" in report["stage_s"]
  assert (tmp_path / "run" / "bytes_choices.png").stat().st_size > 0
  cached = sorted(p.name for p in (tmp_path / "cache").glob("bytes_kl_*.json"))
  assert len(cached) == len(MENU)
  plan = json.loads((tmp_path / "run" / "stream" / "bytes_choices.json").read_text())
  assert plan["choices"] == alloc["choices"]
  # Another budget reuses every measured candidate and spends more bytes for less KL.
  again = compress.run(_quick(0.22, MENU), tmp_path / "run22",
                       spectra_cache_dir=tmp_path / "cache")
  assert len(again["bytes_allocation"]["reused_from"]) == len(MENU)
  assert "sensitivity" not in again["stage_s"]
  assert again["bytes_compressed"] <= 0.22 * again["bytes_dense"]
  assert again["bytes_allocation"]["kl_planned"] <= alloc["kl_planned"]


def test_an_unreachable_bytes_ratio_fails_before_measuring(tmp_path):
  with pytest.raises(ValueError, match=r"config\.bytes_ratio=0\.05 is below .* at least 0\.1"):
    compress.run(_quick(0.05, ("rtn:int3", "rtn:int4")), tmp_path / "run")


def test_alloc_sweep_entry_is_its_own_variant():
  runs = dict(sweep_bytes.get_config("alloc").runs)
  assert runs["alloc_0.12"] == {"compression.bytes_ratio": 0.12} and list(runs) == [
      "gptq_int4", "alloc_0.12"]
  assert "alloc_0.12" not in dict(sweep_bytes.get_config().runs)
  assert "alloc_0.12" not in dict(sweep_bytes.get_config("quick").runs)


def test_a_killed_allocator_run_resumes_to_the_same_checkpoint(tmp_path, monkeypatch):
  from penrose_jax.compression import streaming
  from penrose_jax.io import model_registry
  import jax
  config = _quick(0.17, MENU)
  straight = compress.run(config, tmp_path / "straight")
  real = streaming.compress_layer

  def dies_at_layer_1(key, *args, **kwargs):
    if key == "layers_1":
      raise KeyboardInterrupt("simulated kill")
    return real(key, *args, **kwargs)

  monkeypatch.setattr(streaming, "compress_layer", dies_at_layer_1)
  with pytest.raises(KeyboardInterrupt):
    compress.run(config, tmp_path / "resumed")
  assert (tmp_path / "resumed" / "stream" / "bytes_choices.json").exists()
  monkeypatch.setattr(streaming, "compress_layer", real)
  resumed = compress.run(config, tmp_path / "resumed")
  assert "sensitivity" not in resumed["stage_s"]  # the tables of the first attempt are reused
  assert resumed["bytes_allocation"]["choices"] == straight["bytes_allocation"]["choices"]
  arrays = [jax.tree_util.tree_leaves(model_registry.load(str(tmp_path / d / "model")).params)
            for d in ("straight", "resumed")]
  for a, b in zip(*arrays):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_in_memory_transform_refuses_bytes_ratio():
  from penrose_jax.compression import transform
  with pytest.raises(ValueError, match="bytes_ratio=0.2 needs measured KLs"):
    transform.compress({"w": np.zeros((4, 4), np.float32)}, {"bytes_ratio": 0.2})
