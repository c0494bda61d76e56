"""penrose_jax.parallel on 8 fake CPU devices (one subprocess, see tests/multidevice_checks.py).

The pytest process has already initialised JAX with one device, and
--xla_force_host_platform_device_count only works before initialisation, so all multi-device
checks run together in one child process (~20-40 s on 2 CPU cores, plus ~40-60 s for the
compress + align job runs of the `jobs` check) and report JSON.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ)
  flag = "--xla_force_host_platform_device_count=8"
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice_checks.py"),
                         "all"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  assert lines, f"no JSON from multidevice_checks.py (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
  data = json.loads(lines[-1])
  assert data["device_count"] == 8
  return data["checks"]


def _ok(check):
  assert check["ok"], json.dumps(check, indent=1)[:4000]


def test_sharded_forward_matches_single_device(results):
  check = results["forward"]
  _ok(check)
  assert check["max_abs_diff"] <= TOL
  assert check["q_proj_spec"] == "P('fsdp', 'tensor')"
  assert check["q_proj_shard_shape"] == [32, 32]  # (64, 64) split 2 x 2
  assert check["tokens_spec"] == "P(('data', 'fsdp'),)"


def test_awkward_sizes_fall_back_to_replication(results):
  check = results["awkward_sizes"]
  _ok(check)
  assert check["max_abs_diff"] <= TOL
  assert check["k_proj_spec_fsdp8_36_not_divisible"] == "P()"


def test_compressed_leaf_sharded_along_tile_axis(results):
  check = results["compressed"]
  _ok(check)
  assert check["u_spec"] == "P('fsdp',)"
  assert check["u_shard_shape"] == [2, 8, 4]  # 8 tiles over fsdp=4
  assert "layers_0/attn/q_proj/kernel/u" in check["paths"]
  assert check["max_abs_diff"] <= TOL


def test_sharded_grad_step_matches_single_device(results):
  check = results["train_step"]
  _ok(check)
  assert check["max_abs_param_diff"] <= TOL
  assert abs(check["loss"] - check["ref_loss"]) <= TOL
  assert check["param_change"] > 1e-4
  assert check["kept_spec"] == "P('tensor', 'fsdp')"


def test_train_step_compiles_once(results):
  check = results["train_step"]
  _ok(check)
  assert check["steps"] == 4 and check["jit_cache_size"] == 1
  assert check["momentum_spec"] == "P('fsdp', 'tensor')"
  assert check["init_sharded_vs_jit_init_diff"] <= TOL


def test_checkpoint_restores_onto_other_mesh(results):
  check = results["checkpoint"]
  _ok(check)
  for label in ("8x1", "1x8"):
    assert check[label]["max_abs_diff"] == 0.0
    assert check[label]["shardings_match"]
    assert check[label]["q_leaf_type"] == "RowTiledLowRank"


def test_mesh_validation_messages(results):
  check = results["mesh_validation"]
  _ok(check)
  assert "jax.device_count()=8" in check["messages"]["3x2"]
  assert "{'data': 3, 'fsdp': 2}" in check["messages"]["3x2"]
  assert check["filled"] == {"data": 2, "fsdp": 2, "tensor": 2}


def test_jobs_on_a_mesh_match_single_device(results):
  """compress quick (rel_fro_error per matrix, ppl) and align's first-step loss on a
  {'data': 2, 'fsdp': 4} mesh vs the same runs fully replicated (single-device numerics)."""
  check = results["jobs"]
  _ok(check)
  tol = check["tolerance_rel"]
  assert tol <= 1e-4
  assert check["matrices"] > 0
  assert check["max_rel_diff_rel_fro_error"] <= tol
  assert check["max_rel_diff_ppl"] <= tol
  assert check["rel_diff_align_first_loss"] <= tol
  assert any("fsdp" in spec for spec in check["specs"]["mesh_2x4"].values())
  assert not any("fsdp" in spec for spec in check["specs"]["single"].values())
