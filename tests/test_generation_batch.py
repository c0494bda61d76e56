"""Batched generation (issue 29): greedy rows equal one-by-one `generate`, per-row stop, left
padding hidden by the key mask, a bounded number of compiled shapes, compressed leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.compression import inference, transform
from penrose_jax.models import generation, llama
from penrose_jax.models.config import tiny_config

CFG = tiny_config()
LENGTHS = [3, 17, 5, 30, 9, 1, 12]


def _params(seed=0):
  # Init norms are ones and weights small; scaling spreads the logits so greedy argmax ties
  # (which could flip on rounding) do not occur.
  return jax.tree_util.tree_map(lambda a: a * 3.0, llama.init_params(CFG, seed=seed))


def _prompts(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, CFG.vocab_size, n).tolist() for n in lengths]


def test_left_padded_forward_with_key_mask_matches_unpadded():
  params = _params()
  tokens = jnp.asarray(_prompts([6])[0])[None]
  fwd = jax.jit(lambda p, t, pos, mask: llama.forward(p, t, CFG, positions=pos,
                                                       key_mask=mask).logits)
  ref = fwd(params, tokens, jnp.arange(6)[None], None)
  padded = jnp.concatenate([jnp.zeros((1, 4), jnp.int32), tokens], axis=1)
  positions = jnp.maximum(jnp.arange(10) - 4, 0)[None]
  out = fwd(params, padded, positions, jnp.arange(10)[None] >= 4)
  np.testing.assert_allclose(out[:, 4:], ref, atol=1e-5, rtol=1e-5)
  # The mask matters: without it the padding is attended and the logits change.
  unmasked = fwd(params, padded, positions, None)
  assert float(jnp.max(jnp.abs(unmasked[:, 4:] - ref))) > 1e-3
  last = jax.jit(lambda p, t, pos, mask: llama.forward(
      p, t, CFG, positions=pos, key_mask=mask, last_logits_only=True).logits)
  np.testing.assert_allclose(last(params, padded, positions, jnp.arange(10)[None] >= 4),
                             out[:, -1:], atol=1e-6, rtol=1e-6)


def test_batched_greedy_equals_one_by_one_with_an_early_stop():
  params = _params()
  prompts = _prompts(LENGTHS)
  free = [generation.generate(params, CFG, p, 10) for p in prompts]
  # A stop id that ends one row after 3 tokens while the others run on (or stop elsewhere).
  stop = free[1][3]
  ref = [generation.generate(params, CFG, p, 10, stop_token_ids=[stop]) for p in prompts]
  assert len(ref[1]) == 3 and max(len(r) for r in ref) == 10
  out = generation.generate_batch(params, CFG, prompts, 10, stop_token_ids=[stop], batch_size=4)
  assert out == ref
  assert generation.generate_batch(params, CFG, prompts, 10, batch_size=8) == free


def test_budget_follows_max_position_as_generate_does():
  params = _params()
  prompts = _prompts([CFG.max_position - 3, 4])
  ref = [generation.generate(params, CFG, p, 8) for p in prompts]
  assert [len(r) for r in ref] == [3, 8]
  assert generation.generate_batch(params, CFG, prompts, 8, batch_size=2) == ref


def test_many_prompt_lengths_compile_few_shapes():
  params = _params()
  prompts = _prompts(list(range(22, 0, -1)), seed=1)
  before = generation._generate_padded._cache_size()
  # max_new_tokens is static: a value no other test uses keeps this count to this run.
  generation.generate_batch(params, CFG, prompts, 3, batch_size=4)
  # Six length-sorted batches (4 rows, longest 4, 8, 12, 16, 20; then 2 rows, longest 22)
  # share three padded shapes.
  shapes = {(4, generation.bucket_prompt_length(n)) for n in (4, 8, 12, 16, 20)}
  shapes.add((2, generation.bucket_prompt_length(22)))
  assert len(shapes) == 3
  assert generation._generate_padded._cache_size() - before == len(shapes)


def test_buckets():
  assert [generation.bucket_prompt_length(n) for n in (1, 16, 17, 25, 300, 385)] == [
      16, 16, 24, 32, 384, 512]
  assert generation.batch_sizes(10, 16) == [8, 2]
  assert generation.batch_sizes(37, 16) == [16, 16, 4, 1]
  assert generation.batch_sizes(23, 12) == [12, 8, 2, 1]
  assert generation.batch_sizes(0, 4) == []


def test_compressed_model_batched_equals_one_by_one():
  # Compressed leaves in the stacked-layers form (`generate`'s default, share_layers=True):
  # the scanned forward threads the key mask and the per-row positions too.
  cfg = tiny_config(num_layers=2)
  params = jax.tree_util.tree_map(lambda a: a * 3.0, llama.init_params(cfg, seed=2))
  compressed, _ = transform.compress(params, {"param_ratio": 0.5, "tiles_per_matrix": 4,
                                              "tiling": "penrose", "budget_scope": "matrix"})
  prepared = inference.prepare_for_inference(compressed, share_layers=True)
  assert llama.LAYER_RUNS in prepared
  prompts = _prompts([4, 11])
  ref = [generation.generate(prepared, cfg, p, 6) for p in prompts]
  assert generation.generate_batch(prepared, cfg, prompts, 6, batch_size=2) == ref


def test_sampling_is_seeded_and_rows_stay_in_order():
  params = _params()
  prompts = _prompts([5, 2, 9])
  a = generation.generate_batch(params, CFG, prompts, 6, temperature=1.0, top_p=0.9, seed=3)
  b = generation.generate_batch(params, CFG, prompts[::-1], 6, temperature=1.0, top_p=0.9,
                                seed=3)
  # One batch whatever the input order: the same rows, returned where each prompt was.
  assert a == b[::-1] and [len(x) for x in a] == [6, 6, 6]


def test_bad_input_is_named():
  params = _params()
  with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
    generation.generate_batch(params, CFG, [[1], []], 4)
  with pytest.raises(ValueError, match="top_p"):
    generation.generate_batch(params, CFG, [[1]], 4, top_p=0.0)
  with pytest.raises(ValueError, match="batch_size"):
    generation.generate_batch(params, CFG, [[1]], 4, batch_size=0)
  assert generation.generate_batch(params, CFG, [[1, 2]], 0) == [[]]
