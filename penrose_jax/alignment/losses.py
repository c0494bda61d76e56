"""Distribution-alignment objectives between a teacher (dense) and a student (compressed) model.

Every function is pure, works in float32 whatever the input dtype, and averages over tokens
with an optional mask (1 = count this token, 0 = ignore). Token axes are all axes except the
last (feature / vocabulary) one, so (B, T, D) and (T, D) inputs both work. A mask with no
selected token gives 0, not NaN.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from penrose_jax.models.token_loss import masked_nll, masked_token_mean

Array = jax.Array

OBJECTIVE_TERMS = ("logit_kl", "hidden_kl", "mse", "ce", "js")


def _kl_from_logits(teacher_logits: Array, student_logits: Array, temperature: float) -> Array:
  """Per-token KL(softmax(t / T) || softmax(s / T)) over the last axis."""
  log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def hidden_kl(h_teacher: Array, h_student: Array, temperature: float = 1.0,
              mask: Optional[Array] = None) -> Array:
  """KL between softmax-normalised hidden states over the feature dimension (the paper's loss).

  For every token, p = softmax(h_teacher / T) and q = softmax(h_student / T) over the D
  features; the loss is KL(p || q) averaged over the (masked) tokens.

  Args:
    h_teacher: (..., D) teacher hidden states.
    h_student: (..., D) student hidden states, same shape.
    temperature: softmax temperature T > 0.
    mask: optional (...) token mask.

  Returns:
    Scalar float32 loss.
  """
  return masked_token_mean(_kl_from_logits(h_teacher, h_student, temperature), mask)


def _select_layers(hidden_states: Array, layers: Optional[Sequence[int]]) -> Array:
  """Picks layers (negative indices allowed) from an (L, ...) stack; None keeps all."""
  if layers is None:
    return hidden_states
  return hidden_states[jnp.asarray(list(layers), jnp.int32)]


def _layer_weights(num: int, weights: Optional[Sequence[float]]) -> Array:
  """Normalised per-layer weights (uniform when None)."""
  if weights is None:
    return jnp.full((num,), 1.0 / num, jnp.float32)
  if len(weights) != num:
    raise ValueError(f"got {len(weights)} layer weights for {num} selected layers")
  w = jnp.asarray(weights, jnp.float32)
  return w / jnp.sum(w)


def hidden_kl_per_layer(hs_teacher: Array, hs_student: Array,
                        layers: Optional[Sequence[int]] = None,
                        weights: Optional[Sequence[float]] = None, temperature: float = 1.0,
                        mask: Optional[Array] = None) -> tuple[Array, Array]:
  """Feature-softmax KL (`hidden_kl`) for each selected layer and their weighted mean.

  Args:
    hs_teacher: (L, B, T, D) teacher hidden states (ForwardOutput.hidden_states).
    hs_student: (L, B, T, D) student hidden states.
    layers: indices of the layers to use (negative allowed); None = all L.
    weights: one non-negative weight per selected layer (normalised to sum 1); None = uniform.
    temperature: softmax temperature.
    mask: optional (B, T) token mask.

  Returns:
    (per_layer (K,), weighted_mean scalar), both float32.
  """
  t = _select_layers(hs_teacher, layers)
  s = _select_layers(hs_student, layers)
  per_token = _kl_from_logits(t, s, temperature)  # (K, B, T)
  per_layer = jax.vmap(lambda v: masked_token_mean(v, mask))(per_token)
  return per_layer, jnp.sum(per_layer * _layer_weights(per_layer.shape[0], weights))


def logit_kl(teacher_logits: Array, student_logits: Array, temperature: float = 1.0,
             mask: Optional[Array] = None, scale_by_temperature_squared: bool = True) -> Array:
  """Forward KL(teacher || student) between next-token distributions (distillation loss).

  Args:
    teacher_logits: (..., V) teacher logits.
    student_logits: (..., V) student logits.
    temperature: softmax temperature T.
    mask: optional (...) token mask.
    scale_by_temperature_squared: multiply by T^2 so gradient size does not depend on T
      (Hinton et al.).

  Returns:
    Scalar float32 loss.
  """
  loss = masked_token_mean(_kl_from_logits(teacher_logits, student_logits, temperature), mask)
  return loss * (temperature ** 2) if scale_by_temperature_squared else loss


def js_divergence(logits_a: Array, logits_b: Array, temperature: float = 1.0,
                  mask: Optional[Array] = None) -> Array:
  """Jensen-Shannon divergence between softmax(a / T) and softmax(b / T), in nats.

  Args:
    logits_a: (..., V) logits.
    logits_b: (..., V) logits.
    temperature: softmax temperature.
    mask: optional (...) token mask.

  Returns:
    Scalar float32 divergence in [0, log 2].
  """
  log_p = jax.nn.log_softmax(logits_a.astype(jnp.float32) / temperature, axis=-1)
  log_q = jax.nn.log_softmax(logits_b.astype(jnp.float32) / temperature, axis=-1)
  log_m = jnp.logaddexp(log_p, log_q) - jnp.log(2.0)
  kl_pm = jnp.sum(jnp.exp(log_p) * (log_p - log_m), axis=-1)
  kl_qm = jnp.sum(jnp.exp(log_q) * (log_q - log_m), axis=-1)
  return masked_token_mean(0.5 * (kl_pm + kl_qm), mask)


def feature_mse(h_teacher: Array, h_student: Array, mask: Optional[Array] = None) -> Array:
  """Mean squared difference over features, averaged over (masked) tokens.

  Args:
    h_teacher: (..., D) teacher features.
    h_student: (..., D) student features.
    mask: optional (...) token mask.

  Returns:
    Scalar float32 loss.
  """
  diff = h_student.astype(jnp.float32) - h_teacher.astype(jnp.float32)
  return masked_token_mean(jnp.mean(diff * diff, axis=-1), mask)


def next_token_cross_entropy(logits: Array, tokens: Array, mask: Optional[Array] = None) -> Array:
  """Mean cross-entropy of predicting tokens[:, t + 1] from logits[:, t].

  Args:
    logits: (B, T, V) logits.
    tokens: (B, T) int token ids.
    mask: optional (B, T) mask over *label* tokens: position t + 1 counts when mask[:, t + 1]
      is non-zero (e.g. 0 on prompt / padding, 1 on answer tokens).

  Returns:
    Scalar float32 loss (nats per labelled token).
  """
  return masked_nll(logits[:, :-1], tokens[:, 1:], None if mask is None else mask[:, 1:])


def _get(out: Any, name: str) -> Optional[Array]:
  """Field of a ForwardOutput-like object or dict."""
  if isinstance(out, Mapping):
    return out.get(name)
  return getattr(out, name, None)


def combined_objective(teacher_out: Any, student_out: Any, tokens: Optional[Array],
                       mask: Optional[Array], weights: Mapping[str, float],
                       temperature: float = 1.0, layers: Optional[Sequence[int]] = None,
                       layer_weights: Optional[Sequence[float]] = None,
                       hidden_temperature: Optional[float] = None) -> tuple[Array, dict[str, Array]]:
  """Weighted sum of alignment terms between teacher and student forward outputs.

  Terms with weight 0 (or missing) are not computed, so the teacher needs only what the
  non-zero terms read: `logits` for logit_kl/js, `hidden_states` for hidden_kl/mse.

  Args:
    teacher_out: ForwardOutput (or dict with keys logits, hidden_states) of the teacher.
    student_out: the same for the student.
    tokens: (B, T) token ids; needed only for 'ce'.
    mask: optional (B, T) token mask (distillation terms use it per position; 'ce' uses it on
      label positions, see `next_token_cross_entropy`).
    weights: term name -> weight; names from OBJECTIVE_TERMS: 'logit_kl' (forward KL on
      logits, T^2-scaled), 'hidden_kl' (feature-softmax KL averaged over `layers`), 'mse'
      (feature MSE averaged over `layers`), 'ce' (next-token cross-entropy of the student),
      'js' (Jensen-Shannon on logits).
    temperature: temperature for logit terms.
    layers: hidden-state layers for hidden_kl / mse; None = all.
    layer_weights: optional per-selected-layer weights for hidden_kl / mse.
    hidden_temperature: temperature for hidden_kl (default: `temperature`).

  Returns:
    (loss, terms) where terms maps each computed term name to its unweighted value and
    also holds 'loss'.
  """
  unknown = sorted(set(weights) - set(OBJECTIVE_TERMS))
  if unknown:
    raise ValueError(f"unknown objective terms {unknown}; expected some of {OBJECTIVE_TERMS}")
  active = {k: float(v) for k, v in weights.items() if v}
  if not active:
    raise ValueError("combined_objective needs at least one non-zero weight")
  terms: dict[str, Array] = {}
  if "logit_kl" in active:
    terms["logit_kl"] = logit_kl(_get(teacher_out, "logits"), _get(student_out, "logits"),
                                 temperature, mask)
  if "js" in active:
    terms["js"] = js_divergence(_get(teacher_out, "logits"), _get(student_out, "logits"),
                                temperature, mask)
  if "hidden_kl" in active or "mse" in active:
    hs_t = _select_layers(_get(teacher_out, "hidden_states"), layers)
    hs_s = _select_layers(_get(student_out, "hidden_states"), layers)
    lw = _layer_weights(hs_t.shape[0], layer_weights)
    if "hidden_kl" in active:
      t_h = temperature if hidden_temperature is None else hidden_temperature
      per_layer, _ = hidden_kl_per_layer(hs_t, hs_s, None, None, t_h, mask)
      terms["hidden_kl"] = jnp.sum(per_layer * lw)
    if "mse" in active:
      per_layer_mse = jax.vmap(lambda t, s: feature_mse(t, s, mask))(hs_t, hs_s)
      terms["mse"] = jnp.sum(per_layer_mse * lw)
  if "ce" in active:
    if tokens is None:
      raise ValueError("the 'ce' term needs tokens")
    terms["ce"] = next_token_cross_entropy(_get(student_out, "logits"), tokens, mask)
  loss = sum(active[name] * terms[name] for name in active)
  terms["loss"] = loss
  return loss, terms
