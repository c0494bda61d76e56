"""Alignment losses against hand-computed values, and the student == teacher property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from penrose_jax.alignment import losses

LN3 = np.log(3.0)
# softmax([0, ln 3]) = [1/4, 3/4]; softmax([0, 0]) = [1/2, 1/2].
KL_P_Q = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)


def test_hidden_kl_matches_hand_value_with_temperature_and_mask():
  h_t = jnp.array([[[0.0, 2 * LN3], [5.0, -1.0]]])  # (B=1, T=2, D=2)
  h_s = jnp.array([[[0.0, 0.0], [0.0, 3.0]]])
  # T = 2 turns [0, 2 ln 3] into [0, ln 3]; the second token is masked out.
  got = losses.hidden_kl(h_t, h_s, temperature=2.0, mask=jnp.array([[1, 0]]))
  np.testing.assert_allclose(got, KL_P_Q, rtol=1e-6)
  # Unmasked: mean of both tokens, second one by hand.
  p2 = np.exp([2.5, -0.5]) / np.exp([2.5, -0.5]).sum()
  q2 = np.exp([0.0, 1.5]) / np.exp([0.0, 1.5]).sum()
  kl2 = np.sum(p2 * np.log(p2 / q2))
  np.testing.assert_allclose(losses.hidden_kl(h_t, h_s, 2.0), (KL_P_Q + kl2) / 2, rtol=1e-6)


def test_hidden_kl_per_layer_selection_and_weights():
  same = jnp.zeros((1, 1, 2))
  layer0_t, layer1_t = jnp.array([[[0.0, LN3]]]), same
  hs_t = jnp.stack([layer0_t, layer1_t, layer0_t])  # (L=3, B=1, T=1, D=2)
  hs_s = jnp.stack([same, same, same])
  per_layer, mean = losses.hidden_kl_per_layer(hs_t, hs_s)
  np.testing.assert_allclose(per_layer, [KL_P_Q, 0.0, KL_P_Q], atol=1e-7)
  np.testing.assert_allclose(mean, 2 * KL_P_Q / 3, rtol=1e-6)
  per_layer, mean = losses.hidden_kl_per_layer(hs_t, hs_s, layers=[1, -1], weights=[1.0, 3.0])
  np.testing.assert_allclose(per_layer, [0.0, KL_P_Q], atol=1e-7)
  np.testing.assert_allclose(mean, 0.75 * KL_P_Q, rtol=1e-6)
  with pytest.raises(ValueError, match="layer weights"):
    losses.hidden_kl_per_layer(hs_t, hs_s, layers=[0], weights=[1.0, 2.0])


def test_logit_kl_temperature_scaling():
  t = jnp.array([[0.0, 2 * LN3]])
  s = jnp.array([[0.0, 0.0]])
  np.testing.assert_allclose(losses.logit_kl(t, s, 2.0), 4 * KL_P_Q, rtol=1e-6)
  np.testing.assert_allclose(
      losses.logit_kl(t, s, 2.0, scale_by_temperature_squared=False), KL_P_Q, rtol=1e-6)


def test_js_divergence_hand_value_and_symmetry():
  a, b = jnp.array([0.0, LN3]), jnp.array([0.0, 0.0])
  p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
  m = (p + q) / 2
  expected = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
  np.testing.assert_allclose(losses.js_divergence(a, b), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.js_divergence(b, a), expected, rtol=1e-6)
  far = losses.js_divergence(jnp.array([0.0, -60.0]), jnp.array([-60.0, 0.0]))
  np.testing.assert_allclose(far, np.log(2.0), rtol=1e-5)


def test_feature_mse_and_empty_mask():
  h_t = jnp.zeros((1, 2, 2))
  h_s = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])
  np.testing.assert_allclose(losses.feature_mse(h_t, h_s, jnp.array([[1, 0]])), 2.5)
  np.testing.assert_allclose(losses.feature_mse(h_t, h_s), (2.5 + 12.5) / 2)
  assert float(losses.feature_mse(h_t, h_s, jnp.zeros((1, 2)))) == 0.0


def test_next_token_cross_entropy_uses_label_mask():
  logits = jnp.array([[[0.0, LN3], [0.0, 0.0], [9.0, 9.0]]])  # (B=1, T=3, V=2)
  tokens = jnp.array([[0, 1, 0]])
  np.testing.assert_allclose(losses.next_token_cross_entropy(logits, tokens),
                             (-np.log(0.75) + np.log(2.0)) / 2, rtol=1e-6)
  # mask marks label tokens: only position 1 (predicted from logits[:, 0]) counts.
  got = losses.next_token_cross_entropy(logits, tokens, jnp.array([[1, 1, 0]]))
  np.testing.assert_allclose(got, -np.log(0.75), rtol=1e-6)


def test_combined_objective_weighted_sum_and_validation():
  teacher = {"logits": jnp.array([[[0.0, LN3]]]), "hidden_states": jnp.array([[[[0.0, LN3]]]])}
  student = {"logits": jnp.zeros((1, 1, 2)), "hidden_states": jnp.zeros((1, 1, 1, 2))}
  tokens = jnp.array([[1]])
  loss, terms = losses.combined_objective(teacher, student, tokens, None,
                                          {"logit_kl": 2.0, "hidden_kl": 0.5, "mse": 1.0})
  np.testing.assert_allclose(terms["logit_kl"], KL_P_Q, rtol=1e-6)
  np.testing.assert_allclose(terms["hidden_kl"], KL_P_Q, rtol=1e-6)
  np.testing.assert_allclose(terms["mse"], LN3 ** 2 / 2, rtol=1e-6)
  np.testing.assert_allclose(loss, 2.5 * KL_P_Q + LN3 ** 2 / 2, rtol=1e-6)
  assert "ce" not in terms and "js" not in terms
  with pytest.raises(ValueError, match="unknown objective terms"):
    losses.combined_objective(teacher, student, tokens, None, {"kl": 1.0})


def test_student_equal_to_teacher_gives_zero_losses_and_gradients():
  key1, key2 = jax.random.split(jax.random.PRNGKey(0))
  hidden = 3.0 * jax.random.normal(key1, (3, 2, 5, 8))
  logits = 4.0 * jax.random.normal(key2, (2, 5, 11))
  tokens = jnp.zeros((2, 5), jnp.int32)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  weights = {"logit_kl": 1.0, "hidden_kl": 1.0, "mse": 1.0, "js": 1.0}
  teacher = {"logits": logits, "hidden_states": hidden}

  def objective(student):
    return losses.combined_objective(teacher, student, tokens, mask, weights, temperature=2.0,
                                     layers=[0, 2])

  (loss, terms), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(dict(teacher))
  for name, value in terms.items():
    assert abs(float(value)) < 1e-5, (name, float(value))
  for g in jax.tree_util.tree_leaves(grads):
    assert float(jnp.max(jnp.abs(g))) < 1e-6
  # Sanity: a perturbed student has a positive loss.
  moved, _ = jax.jit(objective)({"logits": logits + 1.0 * jnp.arange(11), "hidden_states": hidden + 0.1})
  assert float(moved) > 1e-3
