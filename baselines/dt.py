"""Decision Transformer (Chen et al. 2021), as CORL's algorithms/offline/dt.py.

A causal GPT over the tokens (R_1, s_1, a_1, ..., R_K, s_K, a_K) of a window of K steps, with
R_t = c * sum_{j>=t} r_j the scaled undiscounted return-to-go (c = rtg_scale = 0.001). Each
token is a linear embedding of R, s or a plus a learned embedding of the episode timestep;
then LayerNorm, dropout, `layers` pre-LayerNorm blocks (x += Drop(Attn(LN(x))) with a causal
mask and padded keys masked; x += Drop(W2 GELU(W1 LN(x))), width 4 x embed), a final LayerNorm,
and a_hat_t = tanh(W h(s_t)) read at the state tokens. The loss is CORL's masked MSE:

    L = mean over (b, t, i) of m_bt (a_hat_bti - a_bti)^2     (padded steps m = 0 count in the
                                                               mean's denominator, as CORL's)

AdamW (weight decay on every parameter, as CORL's model.parameters()), gradient norm clipped
at 0.25, learning rate lr * min((step + 1) / lr_warmup, 1).

Training batches (no loop change): `init(key, spec, config, dataset)` recovers the episodes
of the loop's prepared arrays (offbench/data/trajectories.py: per-row timestep, return-to-go,
episode end) and keeps them, with the (normalized) observations and actions, in the state;
`update(state, batch, key)` ignores the loop's transition minibatch and draws its own
batch_size windows of K rows with `key` (starts uniform over the rows, right-padded with a
mask: CORL's SequenceDataset). So a weighted `--sampler` has no effect on DT.

Acting: `act_carry`/`init_act_carry` (the contract's per-episode memory) keep each evaluation
env's last K (R, s, a, timestep) tokens: R starts at c * target_return and drops by c * r after
each step; the action is read at the newest state token with the padding after it (causal
attention makes that CORL's short context at the first K - 1 steps). Plain `act` acts as at an
episode's first step.

Defaults: CORL's TrainConfig (context 20, 3 layers, 1 head, embedding 128, dropout 0.1 on
attention, residual and embedding, lr 1e-4, 10k warm-up steps, betas (0.9, 0.999), weight
decay 1e-4, clip 0.25, batch 64, reward scale 0.001, timestep table of episode_len 1000 + K,
100k updates: `--updates 100000`). CORL's per-dataset configs (configs/offline/dt/*) use
batch 4096 and lr 8e-4 instead; their target returns are TARGET_RETURNS below (CORL evaluates
both; set one with `--set target_return=3600`).

Declared differences from CORL's dt.py:
- target_return defaults to None: the dataset's best episode return (in init, from the
  recovered episodes), since `init` does not know the task's name; CORL's per-task values are
  in TARGET_RETURNS; one target per run (CORL evaluates each of its two);
- episodes are split as trajectories.py recovers them (terminal or a break in observations),
  so the cut episode at the end of each collection stream is kept (CORL drops the trailing
  unfinished episode of D4RL);
- observations standardized by the harness with std + 1e-3 (CORL: + 1e-6);
- Flax initialization choices: every Dense/Embed kernel normal(0.02), biases 0, as CORL's
  _init_weights, also for the attention's q/k/v projections (PyTorch's in_proj is Xavier-uniform);
- evaluation: episodes longer than 1000 steps reuse the last timestep embedding (CORL's eval
  stops at episode_len); `act` (tools without memory) sees one step of context;
- known cost: the dataset rows live in the state, once per seed, and so in every checkpoint
  (~68 MB per seed for 1M hopper rows). The divergence guard's extra work is not measurable
  (1M hopper-sized rows, default config: 3.0 updates/s unguarded, 3.1 guarded, loaded 2-core
  CPU; the update's ~9 GFLOP dominate: 100k updates take hours per seed on CPU).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from offbench.algorithms import EnvSpec, Transition
from offbench.data import trajectories

MODES = ("offline",)

# CORL's configs/offline/dt/<task>/*.yaml target_returns (the first is the default there)
TARGET_RETURNS = {"hopper": (3600.0, 1800.0), "halfcheetah": (12000.0, 6000.0),
                  "walker2d": (5000.0, 2500.0)}


@dataclasses.dataclass(frozen=True)
class Config:
    context: int = 20  # K, steps per window (CORL's seq_len)
    layers: int = 3
    heads: int = 1
    embed: int = 128
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    max_timestep: int = 1000  # CORL's episode_len: the timestep table has max_timestep + K rows
    lr: float = 1e-4
    lr_warmup: int = 10_000
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 1e-4
    clip_grad: float = 0.25
    batch_size: int = 64
    rtg_scale: float = 0.001  # CORL's reward_scale, applied to returns-to-go only
    target_return: float | None = None  # None: the dataset's best episode return
    normalize_obs: bool = True  # applied by the harness (offbench/loops/offline.py)


class Block(nn.Module):
    embed: int
    heads: int
    attention_dropout: float
    residual_dropout: float

    @nn.compact
    def __call__(self, x, mask, train: bool):
        init = nn.initializers.normal(0.02)
        h = nn.LayerNorm()(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, dropout_rate=self.attention_dropout, kernel_init=init,
            deterministic=not train)(h, h, mask=mask)
        x = x + nn.Dropout(self.residual_dropout, deterministic=not train)(h)
        h = nn.Dense(4 * self.embed, kernel_init=init)(nn.LayerNorm()(x))
        h = nn.Dense(self.embed, kernel_init=init)(nn.gelu(h, approximate=False))
        return x + nn.Dropout(self.residual_dropout, deterministic=not train)(h)


class DecisionTransformer(nn.Module):
    action_size: int
    config: Config

    @nn.compact
    def __call__(self, obs, action, rtg, timestep, mask, train: bool = False):
        """(B, K, obs), (B, K, act), (B, K), (B, K) int, (B, K) -> actions (B, K, act)."""
        c = self.config
        init = nn.initializers.normal(0.02)
        batch, k = rtg.shape
        time = nn.Embed(c.max_timestep + c.context, c.embed, embedding_init=init)(timestep)
        tokens = jnp.stack([nn.Dense(c.embed, kernel_init=init)(rtg[..., None]) + time,
                            nn.Dense(c.embed, kernel_init=init)(obs) + time,
                            nn.Dense(c.embed, kernel_init=init)(action) + time], axis=2)
        x = tokens.reshape(batch, 3 * k, c.embed)  # R_1, s_1, a_1, R_2, ...
        keys = jnp.repeat(mask > 0, 3, axis=1)
        attend = jnp.tril(jnp.ones((3 * k, 3 * k), bool))[None] & keys[:, None, :]
        x = nn.Dropout(c.embedding_dropout, deterministic=not train)(nn.LayerNorm()(x))
        for _ in range(c.layers):
            x = Block(c.embed, c.heads, c.attention_dropout, c.residual_dropout)(
                x, attend[:, None], train)
        x = nn.LayerNorm()(x)
        return jnp.tanh(nn.Dense(self.action_size, kernel_init=init)(x[:, 1::3]))


class DTState(struct.PyTreeNode):
    params: dict
    opt: optax.OptState
    steps: jax.Array
    data: dict  # the dataset's rows and episode tables (trajectories.episode_tables)
    target: jax.Array  # the scaled target return-to-go of evaluation
    config: Config = struct.field(pytree_node=False)
    spec: EnvSpec = struct.field(pytree_node=False)


def network(state_or_config, spec: EnvSpec | None = None) -> DecisionTransformer:
    if spec is None:
        return DecisionTransformer(state_or_config.spec.action_size, state_or_config.config)
    return DecisionTransformer(spec.action_size, state_or_config)


def optimizer(config: Config) -> optax.GradientTransformation:
    def schedule(count):
        return config.lr * jnp.minimum((count + 1) / config.lr_warmup, 1.0)
    return optax.chain(optax.clip_by_global_norm(config.clip_grad),
                       optax.adamw(schedule, *config.betas, weight_decay=config.weight_decay))


def init(key: jax.Array, spec: EnvSpec, config: Config | None = None, dataset=None) -> DTState:
    config = config or Config()
    if dataset is None:
        raise ValueError("the Decision Transformer samples its own windows: pass the dataset")
    tables = trajectories.episode_tables(dataset["obs"], dataset["next_obs"],
                                         dataset["terminal"], dataset["reward"])
    data = {**tables, "obs": jnp.asarray(dataset["obs"], jnp.float32),
            "action": jnp.asarray(dataset["action"], jnp.float32),
            "rtg": tables["rtg"] * config.rtg_scale}
    if config.target_return is None:
        target = jnp.max(jnp.where(tables["timestep"] == 0, tables["rtg"], -jnp.inf))
    else:
        target = jnp.asarray(config.target_return, jnp.float32)
    k = config.context
    dummy = (jnp.zeros((1, k, spec.observation_size)), jnp.zeros((1, k, spec.action_size)),
             jnp.zeros((1, k)), jnp.zeros((1, k), jnp.int32), jnp.ones((1, k)))
    params = network(config, spec).init(key, *dummy)
    return DTState(params=params, opt=optimizer(config).init(params),
                   steps=jnp.zeros((), jnp.int32), data=data,
                   target=target * config.rtg_scale, config=config, spec=spec)


def loss(params: dict, state: DTState, w: dict, key: jax.Array) -> tuple[jax.Array, dict]:
    pred = network(state).apply(params, w["obs"], w["action"], w["rtg"], w["timestep"],
                                w["mask"], True, rngs={"dropout": key})
    value = jnp.mean((pred - w["action"]) ** 2 * w["mask"][..., None])
    return value, {"dt_loss": value}


def update(state: DTState, batch: Transition, key: jax.Array) -> tuple[DTState, dict]:
    k_sample, k_drop = jax.random.split(key)
    w = trajectories.sample(state.data, k_sample, state.config.batch_size, state.config.context)
    w["timestep"] = jnp.minimum(w["timestep"], state.config.max_timestep + state.config.context
                                - 1)
    grads, metrics = jax.grad(loss, has_aux=True)(state.params, state, w, k_drop)
    updates, opt = optimizer(state.config).update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt=opt, steps=state.steps + 1), metrics


def init_act_carry(state: DTState, n: int) -> dict:
    k, spec = state.config.context, state.spec
    return {"obs": jnp.zeros((n, k, spec.observation_size)),
            "action": jnp.zeros((n, k, spec.action_size)), "rtg": jnp.zeros((n, k)),
            "timestep": jnp.zeros((n, k), jnp.int32), "t": jnp.zeros((), jnp.int32)}


def act_carry(state: DTState, carry: dict, obs: jax.Array, reward: jax.Array, key: jax.Array,
              deterministic: bool) -> tuple[jax.Array, dict]:
    """The action at the carry's step t from its last K tokens, and the carry after it."""
    c = state.config
    t = carry["t"]
    at = jnp.minimum(t, c.context - 1)  # the newest token's slot
    last = carry["rtg"][:, jnp.clip(t - 1, 0, c.context - 1)]
    rtg = jnp.where(t == 0, state.target, last - c.rtg_scale * reward)

    def push(x, value):  # slide the window once it is full, then write the newest step
        x = jnp.where(t >= c.context, jnp.roll(x, -1, axis=1), x)
        return jax.lax.dynamic_update_index_in_dim(x, value.astype(x.dtype), at, axis=1)
    new = {"obs": push(carry["obs"], obs),
           "action": push(carry["action"], jnp.zeros_like(carry["action"][:, 0])),  # dummy
           "rtg": push(carry["rtg"], rtg),
           "timestep": push(carry["timestep"], jnp.broadcast_to(
               jnp.minimum(t, c.max_timestep - 1), rtg.shape)),
           "t": t + 1}
    mask = jnp.broadcast_to(jnp.arange(c.context) <= at, carry["rtg"].shape)
    pred = network(state).apply(state.params, new["obs"], new["action"], new["rtg"],
                                new["timestep"], mask.astype(jnp.float32))
    action = jax.lax.dynamic_index_in_dim(pred, at, axis=1, keepdims=False)
    new["action"] = jax.lax.dynamic_update_index_in_dim(new["action"], action, at, axis=1)
    return action, new


def act(state: DTState, obs: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
    """The action at an episode's first step (a context of one step)."""
    return act_carry(state, init_act_carry(state, obs.shape[0]), obs,
                     jnp.zeros(obs.shape[0]), key, deterministic)[0]


def policy_params(state: DTState) -> dict:
    return state.params
