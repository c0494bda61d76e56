"""An independent, straightforward numpy Llama forward used as the parity reference in tests.

Written from the architecture's definition (float64, explicit loops over heads), sharing no code
with penrose_jax.models.
"""

from __future__ import annotations

import numpy as np


def _rms_norm(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rope_rotate_half(x, positions, theta):
  # x: (T, d). Pair feature i with i + d/2.
  d = x.shape[-1]
  inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
  ang = positions[:, None] * inv[None, :]
  c, s = np.cos(ang), np.sin(ang)
  a, b = x[:, : d // 2], x[:, d // 2:]
  return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def reference_logits(params, cfg, tokens):
  """Returns (T, V) float64 logits for one sequence of token ids.

  Args:
    params: penrose_jax params tree (dense kernels, (in, out)).
    cfg: ModelConfig.
    tokens: 1-D int sequence.

  Returns:
    logits, list of per-layer outputs.
  """
  p = {k: v for k, v in params.items()}
  f = lambda a: np.asarray(a, np.float64)
  emb = f(p["embed"]["embedding"])
  x = emb[np.asarray(tokens)]
  T = x.shape[0]
  pos = np.arange(T, dtype=np.float64)
  hd = cfg.head_dim
  group = cfg.num_heads // cfg.num_kv_heads
  outs = []
  for i in range(cfg.num_layers):
    lp = p[f"layers_{i}"]
    h = _rms_norm(x, f(lp["attn_norm"]["scale"]), cfg.rms_norm_eps)
    def proj(name):
      y = h @ f(lp["attn"][name]["kernel"])
      if "bias" in lp["attn"][name]:
        y = y + f(lp["attn"][name]["bias"])
      return y
    q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
    heads = []
    for head in range(cfg.num_heads):
      kv = head // group
      qh = _rope_rotate_half(q[:, head * hd:(head + 1) * hd], pos, cfg.rope_theta)
      kh = _rope_rotate_half(k[:, kv * hd:(kv + 1) * hd], pos, cfg.rope_theta)
      vh = v[:, kv * hd:(kv + 1) * hd]
      s = qh @ kh.T / np.sqrt(hd)
      s = s + np.triu(np.full((T, T), -np.inf), k=1)
      s = np.exp(s - s.max(axis=-1, keepdims=True))
      s = s / s.sum(axis=-1, keepdims=True)
      heads.append(s @ vh)
    x = x + np.concatenate(heads, axis=-1) @ f(lp["attn"]["o_proj"]["kernel"])
    h = _rms_norm(x, f(lp["mlp_norm"]["scale"]), cfg.rms_norm_eps)
    g = h @ f(lp["mlp"]["gate_proj"]["kernel"])
    u = h @ f(lp["mlp"]["up_proj"]["kernel"])
    x = x + (g / (1 + np.exp(-g)) * u) @ f(lp["mlp"]["down_proj"]["kernel"])
    outs.append(x)
  x = _rms_norm(x, f(p["final_norm"]["scale"]), cfg.rms_norm_eps)
  head = emb.T if cfg.tie_embeddings else f(p["lm_head"]["kernel"])
  return x @ head, outs
