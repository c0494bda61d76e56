"""LoRA adapters: shapes, counts, unchanged output at init, training, jit, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from penrose_jax import io as pio
from penrose_jax.models import llama, lora
from penrose_jax.models.config import tiny_config
from penrose_jax.training import trainable


def _model():
  config = tiny_config()
  return config, llama.init_params(config, seed=0)


def test_add_lora_shapes_counts_and_purity():
  config, params = _model()
  before = jax.tree_util.tree_map(np.asarray, params)
  adapted = lora.add_lora(params, rank=4, alpha=8.0, seed=1)
  # Input untouched (same objects, same values).
  assert not isinstance(params["layers_0"]["attn"]["q_proj"]["kernel"], lora.LoRAKernel)
  jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                         jax.tree_util.tree_map(np.asarray, params))
  leaf = adapted["layers_0"]["mlp"]["down_proj"]["kernel"]
  assert isinstance(leaf, lora.LoRAKernel)
  n_in, n_out = params["layers_0"]["mlp"]["down_proj"]["kernel"].shape
  assert leaf.shape == (n_in, n_out) and leaf.a.shape == (n_in, 4) and leaf.b.shape == (4, n_out)
  assert leaf.param_count() == n_in * n_out + 4 * (n_in + n_out)
  assert leaf.nbytes() == 4 * leaf.param_count()
  counts = lora.lora_param_counts(adapted)
  assert counts["lora_kernels"] == 7 * config.num_layers
  assert not isinstance(adapted["embed"]["embedding"], lora.LoRAKernel)
  # Deterministic in the seed.
  again = lora.add_lora(params, rank=4, alpha=8.0, seed=1)
  np.testing.assert_array_equal(again["layers_0"]["mlp"]["down_proj"]["kernel"].a, leaf.a)


def test_output_unchanged_at_init_and_merge_roundtrip():
  config, params = _model()
  tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % config.vocab_size
  ref = llama.forward(params, tokens, config).logits
  adapted = lora.add_lora(params, rank=2)
  out = jax.jit(lambda p, t: llama.forward(p, t, config).logits)(adapted, tokens)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  # A non-zero B changes the output, and merge_lora reproduces it densely.
  adapted = jax.tree_util.tree_map(
      lambda x: x, adapted, is_leaf=lambda x: isinstance(x, lora.LoRAKernel))
  leaf = adapted["layers_1"]["mlp"]["up_proj"]["kernel"]
  adapted["layers_1"]["mlp"]["up_proj"]["kernel"] = leaf.replace(b=jnp.ones_like(leaf.b) * 0.1)
  out2 = llama.forward(adapted, tokens, config).logits
  assert float(jnp.max(jnp.abs(out2 - ref))) > 1e-4
  merged = lora.merge_lora(adapted)
  assert not any(isinstance(x, lora.LoRAKernel) for x in jax.tree_util.tree_leaves(
      merged, is_leaf=lambda x: isinstance(x, lora.LoRAKernel)))
  np.testing.assert_allclose(llama.forward(merged, tokens, config).logits, out2, atol=1e-4)


def test_trainable_selects_only_adapters_and_loss_falls():
  config, params = _model()
  adapted = lora.add_lora(params, rank=4, alpha=16.0)
  mask = trainable.trainable_mask(adapted, lora.LORA_TRAINABLE_REGEX)
  info = trainable.describe_trainable(adapted, mask)
  assert info["trainable_params"] == lora.lora_param_counts(adapted)["lora_params"]
  assert all(p.endswith("/a") or p.endswith("/b") for p in info["trainable_paths"])
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (2, 16)),
                       jnp.int32)

  def loss_fn(train_part, frozen):
    p = trainable.merge(train_part, frozen)
    logits = llama.forward(p, tokens[:, :-1], config).logits
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

  train_part, frozen = trainable.partition(adapted, mask)
  opt = optax.adam(1e-2)
  state = opt.init(train_part)

  @jax.jit
  def step(train_part, state):
    loss, grads = jax.value_and_grad(loss_fn)(train_part, frozen)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(train_part, updates), state, loss

  losses = []
  for _ in range(15):
    train_part, state, loss = step(train_part, state)
    losses.append(float(loss))
  assert losses[-1] < losses[0] - 0.1
  # Base kernels did not move.
  final = trainable.merge(train_part, frozen)
  np.testing.assert_array_equal(final["layers_0"]["attn"]["q_proj"]["kernel"].base,
                                params["layers_0"]["attn"]["q_proj"]["kernel"])


def test_checkpoint_roundtrip(tmp_path):
  _, params = _model()
  adapted = lora.add_lora(params, rank=3, alpha=6.0)
  pio.save_params(tmp_path / "ckpt", adapted)
  restored, _ = pio.restore_params(tmp_path / "ckpt")
  leaf = restored["layers_0"]["attn"]["k_proj"]["kernel"]
  assert isinstance(leaf, lora.LoRAKernel) and leaf.alpha == 6.0
  np.testing.assert_array_equal(leaf.a, adapted["layers_0"]["attn"]["k_proj"]["kernel"].a)
