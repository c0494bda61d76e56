"""Orbax params checkpoints with registered compressed leaves."""

from __future__ import annotations

import json

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.io import CheckpointFormatError, register_leaf_type, restore_params, save_params
from penrose_jax.io import checkpoint as checkpoint_lib
from penrose_jax.models.config import tiny_config


@register_leaf_type
@flax.struct.dataclass
class LowRankLeaf:
  """Dummy compressed leaf: W = u @ v, with a static layout tuple."""
  u: jax.Array
  v: jax.Array
  layout: tuple = flax.struct.field(pytree_node=False)

  @property
  def shape(self):
    return (self.u.shape[0], self.v.shape[1])

  def matmul(self, x):
    return (x @ self.u) @ self.v

  def materialize(self):
    return self.u @ self.v

  def checkpoint_arrays(self):
    return {"u": self.u, "v": self.v}

  def checkpoint_meta(self):
    return {"layout": list(self.layout)}

  @classmethod
  def from_checkpoint(cls, arrays, meta):
    return cls(u=arrays["u"], v=arrays["v"], layout=tuple(meta["layout"]))


@flax.struct.dataclass
class UnregisteredLeaf:
  w: jax.Array

  def matmul(self, x):
    return x @ self.w

  def materialize(self):
    return self.w


def make_params():
  rng = np.random.default_rng(0)
  return {
      "embed": {"embedding": jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)},
      "layers_0": {"attn": {"q_proj": {
          "kernel": LowRankLeaf(jnp.ones((4, 2)), jnp.arange(6.0).reshape(2, 3), (3, 1, 2)),
          "bias": np.arange(3, dtype=np.float32)}},
          "mlp_norm": {"scale": jnp.ones(4, jnp.bfloat16)}},
  }


def assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)  # includes leaf classes + static fields
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    assert np.array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_compressed_leaf(tmp_path):
  params = make_params()
  metadata = {"config": tiny_config(), "step": 3}
  save_params(tmp_path / "ckpt", params, metadata)
  restored, meta = restore_params(tmp_path / "ckpt")
  assert_same(restored, params)
  leaf = restored["layers_0"]["attn"]["q_proj"]["kernel"]
  assert isinstance(leaf, LowRankLeaf) and leaf.layout == (3, 1, 2)
  assert meta["step"] == 3 and meta["config"] == tiny_config().to_dict()
  sidecar = json.loads((tmp_path / "ckpt" / checkpoint_lib.SIDECAR_FILE).read_text())
  assert sidecar["compressed_leaves"][0]["class"] == "LowRankLeaf"
  assert not [p for p in (tmp_path / "ckpt").iterdir() if ".tmp" in p.name]


def test_restore_with_shardings(tmp_path):
  params = make_params()
  save_params(tmp_path / "ckpt", params)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for shardings in (sharding, jax.tree.map(lambda _: sharding, params),
                    {"layers_0": {"attn": {"q_proj": {"kernel": {"u": sharding}}}}}):
    restored, _ = restore_params(tmp_path / "ckpt", shardings=shardings)
    assert_same(restored, params)
    assert all(isinstance(x, jax.Array) and x.sharding == sharding
               for x in jax.tree.leaves(restored))


def test_overwrite_and_incomplete(tmp_path):
  directory = tmp_path / "ckpt"
  save_params(directory, make_params())
  with pytest.raises(FileExistsError, match="already holds a checkpoint"):
    save_params(directory, make_params())
  params = make_params()
  params["embed"]["embedding"] = params["embed"]["embedding"] * 2
  save_params(directory, params, overwrite=True)
  assert_same(restore_params(directory)[0], params)
  (directory / checkpoint_lib.SIDECAR_FILE).unlink()  # as if the save died before the sidecar
  with pytest.raises(CheckpointFormatError, match="save did not finish"):
    restore_params(directory)
  with pytest.raises(CheckpointFormatError, match="nowhere: checkpoint directory not found"):
    restore_params(tmp_path / "nowhere")


def test_unregistered_and_bad_values(tmp_path):
  with pytest.raises(TypeError, match=r"\['w'\] is a UnregisteredLeaf, which is not registered"):
    save_params(tmp_path / "a", {"w": UnregisteredLeaf(jnp.ones((2, 2)))})
  with pytest.raises(TypeError, match="metadata must be JSON serialisable"):
    save_params(tmp_path / "b", {"w": jnp.ones(2)}, {"bad": object()})
  with pytest.raises(TypeError, match=r"params\['w'\] is a str"):
    save_params(tmp_path / "c", {"w": "text"})


def test_unknown_leaf_class_on_restore(tmp_path):
  directory = tmp_path / "ckpt"
  save_params(directory, make_params())
  path = directory / checkpoint_lib.SIDECAR_FILE
  sidecar = json.loads(path.read_text())
  sidecar["compressed_leaves"][0]["class"] = "NotAClass"
  path.write_text(json.dumps(sidecar))
  with pytest.raises(CheckpointFormatError, match="'NotAClass'.*is not registered"):
    restore_params(directory)


def test_register_leaf_type_validation():
  with pytest.raises(TypeError, match="lacks"):
    register_leaf_type(type("Empty", (), {}))
  methods = {m: (lambda self: None) for m in
             ("checkpoint_arrays", "checkpoint_meta", "from_checkpoint")}
  clash = type("LowRankLeaf", (), dict(methods, __module__="some_other_module"))
  with pytest.raises(ValueError, match="already registered"):
    register_leaf_type(clash)
  assert register_leaf_type(LowRankLeaf) is LowRankLeaf  # re-registering the same class is fine
  assert checkpoint_lib.registered_leaf_types()["LowRankLeaf"] is LowRankLeaf


def test_restore_imports_the_leaf_module(tmp_path, monkeypatch):
  (tmp_path / "leafmod_for_restore.py").write_text('''
import flax.struct, jax
from penrose_jax.io import register_leaf_type

@register_leaf_type
@flax.struct.dataclass
class ModuleLeaf:
  w: jax.Array
  def checkpoint_arrays(self): return {"w": self.w}
  def checkpoint_meta(self): return {}
  @classmethod
  def from_checkpoint(cls, arrays, meta): return cls(arrays["w"])
''')
  monkeypatch.syspath_prepend(str(tmp_path))
  import leafmod_for_restore  # pylint: disable=g-import-not-at-top
  save_params(tmp_path / "ckpt", {"k": leafmod_for_restore.ModuleLeaf(jnp.ones(3))})
  monkeypatch.delitem(checkpoint_lib._LEAF_TYPES, "ModuleLeaf")  # pylint: disable=protected-access
  monkeypatch.delitem(__import__("sys").modules, "leafmod_for_restore")
  restored, _ = restore_params(tmp_path / "ckpt")
  assert type(restored["k"]).__name__ == "ModuleLeaf"
  assert np.array_equal(restored["k"].w, np.ones(3))
