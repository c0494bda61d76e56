"""make_optimizer: warmup + cosine schedule, clipping, weight decay only on matrices."""

import jax.numpy as jnp
import numpy as np
import optax

from penrose_jax.training import OptimizerConfig, make_optimizer, make_schedule


def test_schedule_warmup_then_cosine():
  cfg = OptimizerConfig(learning_rate=1.0, warmup_steps=4, total_steps=14, end_lr_fraction=0.1)
  sched = make_schedule(cfg)
  np.testing.assert_allclose([float(sched(i)) for i in (0, 2, 4)], [0.0, 0.5, 1.0], atol=1e-6)
  mid = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 5 / 10))
  np.testing.assert_allclose(float(sched(9)), mid, rtol=1e-5)
  np.testing.assert_allclose(float(sched(14)), 0.1, rtol=1e-5)
  # No warmup: the first step already uses the peak rate.
  assert float(make_schedule({"learning_rate": 0.5, "total_steps": 10})(0)) == 0.5


def test_clipping_and_weight_decay_mask():
  params = {"w": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
  grads = {"w": jnp.zeros((2, 2)).at[0, 0].set(100.0), "scale": jnp.zeros((2,))}
  lr, eps = 0.1, 1e3  # a large eps makes Adam's step proportional to the (clipped) gradient
  for clip, g_eff in ((1.0, 1.0), (0.0, 100.0)):
    opt = make_optimizer(OptimizerConfig(learning_rate=lr, total_steps=10, clip_norm=clip,
                                         eps=eps, weight_decay=0.0))
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(updates["w"][0, 0], -lr * g_eff / (g_eff + eps), rtol=1e-5)
  opt = make_optimizer(OptimizerConfig(learning_rate=lr, total_steps=10, weight_decay=0.5))
  zero = {"w": jnp.zeros((2, 2)), "scale": jnp.zeros((2,))}
  updates, _ = opt.update(zero, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["w"], 1 - lr * 0.5, rtol=1e-6)  # decayed
  np.testing.assert_allclose(new["scale"], 1.0)  # vectors are not decayed
