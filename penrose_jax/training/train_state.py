"""TrainState and the guarded, jitted train step shared by alignment and Q&A fine-tuning."""

from __future__ import annotations

from typing import Any, Callable, Optional

import chex
import flax
import jax
import jax.numpy as jnp
import optax

from penrose_jax.training.trainable import merge, partition

# loss_fn(params, batch, rng, constants) -> (loss, metrics dict of scalars).
LossFn = Callable[[Any, Any, jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]]
# step(state, batch, constants=None) -> (new_state, metrics, finite flag).
TrainStep = Callable[..., tuple["TrainState", dict[str, jax.Array], jax.Array]]


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries between steps (a pytree; checkpointed as a whole).

  Attributes:
    step: int32 scalar, number of completed updates; the next update reads batch_fn(step).
    params: the full params tree (trainable and frozen arrays, compressed leaves included).
    opt_state: optimizer state for the trainable part only.
    rng: base PRNG key (raw uint32 key data); step i uses fold_in(rng, i), so randomness
      depends only on (seed, step) and a resumed run repeats it exactly.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def init_train_state(params: Any, optimizer: optax.GradientTransformation, mask: Any,
                     seed: int = 0) -> TrainState:
  """Builds the step-0 state.

  Args:
    params: the params to train (full tree).
    optimizer: the optax transformation (see `make_optimizer`).
    mask: trainable mask tree (see `trainable_mask`).
    seed: base seed for per-step randomness.

  Returns:
    TrainState with step 0; arrays without a mesh sharding are replicated on the params' mesh
    (when the params carry one). Its params are copies: the train step donates the state, and
    the caller's arrays (often shared with a teacher model) must stay valid.
  """
  params = jax.tree_util.tree_map(jnp.copy, params)
  trainable, _ = partition(params, mask)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=optimizer.init(trainable), rng=jax.random.PRNGKey(seed))
  return _replicate_unplaced(state)


def _replicate_unplaced(state: TrainState) -> TrainState:
  """Puts arrays without a mesh sharding (step, rng, optimizer counts) on the params' mesh.

  The jitted step returns every output on the mesh; an input state whose scalars sit on one
  default device has a different sharding signature, so the second step would recompile the
  whole update (minutes for a compressed model).
  """
  mesh = None
  for leaf in jax.tree_util.tree_leaves(state.params):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding):
      mesh = sharding.mesh
      break
  if mesh is None:
    return state
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def place(x):
    if isinstance(getattr(x, "sharding", None), jax.sharding.NamedSharding):
      return x
    return jax.device_put(x, replicated)

  return jax.tree_util.tree_map(place, state)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, mask: Any,
                    schedule: Optional[optax.Schedule] = None, donate: bool = True,
                    max_traces: Optional[int] = None) -> TrainStep:
  """Builds a jitted update that differentiates only the trainable arrays.

  The step is guarded: when the loss or any gradient is non-finite it returns the input
  state unchanged (step counter included) and `finite=False`, so the caller can stop with
  the last good state.

  Args:
    loss_fn: (params, batch, rng, constants) -> (loss, metrics). `params` is the merged full
      tree; `constants` is whatever the caller passes as third step argument (e.g. teacher
      params: passing big arrays as arguments instead of closing over them keeps them out of
      the compiled program).
    optimizer: optax transformation, initialised on the trainable part (`init_train_state`).
    mask: trainable mask tree (static; decides what gets gradients).
    schedule: optional learning-rate schedule; adds 'lr' to the metrics.
    donate: donate the input state buffers (halves peak memory; the caller must not reuse the
      state passed in).
    max_traces: if set, fail when the step is traced more than this many times
      (`chex.assert_max_traces`), e.g. 1 to catch accidental recompiles.

  Returns:
    step(state, batch, constants=None) -> (new_state, metrics, finite) where metrics holds
    'loss', 'grad_norm', optional 'lr' and the loss_fn metrics.
  """

  def step(state: TrainState, batch: Any, constants: Any = None):
    trainable, frozen = partition(state.params, mask)
    rng = jax.random.fold_in(state.rng, state.step)

    def objective(train_part):
      return loss_fn(merge(train_part, frozen), batch, rng, constants)

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
    grad_norm = optax.global_norm(grads)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, trainable)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # Select only what an update changes; frozen arrays pass through untouched.
    keep_if_bad = lambda new, old: jax.tree_util.tree_map(
        lambda n, o: jnp.where(finite, n, o), new, old)
    new_trainable = keep_if_bad(optax.apply_updates(trainable, updates), trainable)
    new_state = TrainState(step=jnp.where(finite, state.step + 1, state.step),
                           params=merge(new_trainable, frozen),
                           opt_state=keep_if_bad(new_opt_state, state.opt_state), rng=state.rng)
    metrics = dict(aux)
    metrics["loss"] = loss
    metrics["grad_norm"] = grad_norm
    if schedule is not None:
      metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return new_state, metrics, finite

  if max_traces is not None:
    step = chex.assert_max_traces(n=max_traces)(step)
  return jax.jit(step, donate_argnums=(0,) if donate else ())
