"""Dataset variants as ids: a base dataset plus transforms, applied deterministically when the
dataset is loaded, e.g. `hopper-medium-replay-100k+corrupt=obs:random:0.3:1.0+seed=1`.

    +episodes=F                      keep a fraction F in (0, 1] of the episodes (scarcity)
    +mix=KIND:F                      add F x (the base's episode count) episodes of another kind
                                     of the same task and size (mixed data, e.g. rare expert
                                     trajectories: `+mix=expert:0.05`)
    +corrupt=FIELD:random:RATE:EPS   RIQL's random corruption of a fraction RATE of the
                                     transitions, FIELD in obs, act, rew, dyn (next observations)
    +corrupt=FIELD:adversarial:RATE:EPS  RIQL's adversarial corruption: a gradient attack on a
                                     Q-function trained on the clean data (adversarial.py)
    +seed=N                          the seed of every transform of the id (default 0)

Why on load and not materialized: a variant is a pure function of its base's bytes and its id,
so it needs no storage, no build step and no version of its own; the store keys a cell by the
id and by the fingerprints of the datasets it reads (`dataset_fingerprint`), so a rebuilt base
gives new cells. Transforms apply in the order written; scarcity and mixtures pick whole
episodes, corruptions act on the flat transitions (observations and next observations are
separate arrays there, as in D4RL, so corrupting a transition's observation leaves the previous
transition's next observation alone).

RIQL's random corruption, as its paper defines it (Yang et al. 2023, "Towards Robust Offline
RL under Diverse Data Corruption", Sec. 3 and App. A), for the chosen transitions:
observations s + lambda * std(s), actions a + lambda * std(a), next observations
s' + lambda * std(s'), lambda ~ Uniform[-EPS, EPS] per dimension, std per dimension over the
dataset; rewards replaced by Uniform[-30 EPS, 30 EPS] (the authors' attack.py does the same).
Declared differences from the authors' code: exactly int(RATE x N) transitions are corrupted,
drawn without replacement (theirs: each transition with probability RATE, so about that many),
with a seeded PCG64 Generator (theirs: numpy's RandomState and torch's generator); corrupted
actions are clipped to [-1, 1], the policies' action range here (theirs are not).

RIQL's adversarial corruption (offbench/data/adversarial.py, with its equations, attacker, cache
and declared differences): the same rows, chosen the same way; obs, act and dyn perturbed within
the EPS-ball (units of the field's std) by projected gradient descent on a Q-function trained on
the transitions before the id's first corruption, rewards r' = -EPS * r.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

FIELDS = {"obs": "observations", "act": "actions", "rew": "rewards", "dyn": "next_observations"}
KINDS = ("random", "adversarial")
REWARD_RANGE = 30.0  # RIQL's random reward corruption: Uniform[-30 eps, 30 eps]
FORMS = ("+episodes=F (0 < F <= 1), +mix=KIND:F (F > 0), +corrupt=FIELD:KIND:RATE:EPS "
         "(FIELD obs|act|rew|dyn, KIND random|adversarial, 0 < RATE <= 1, EPS > 0), "
         "+seed=N (N >= 0)")


@dataclasses.dataclass(frozen=True)
class Transform:
    name: str  # episodes | mix | corrupt
    args: tuple

    @property
    def text(self) -> str:
        return f"+{self.name}=" + ":".join(str(a) for a in self.args)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A dataset id split into its base and its transforms."""

    base: str
    transforms: tuple[Transform, ...] = ()
    seed: int = 0

    @property
    def adversarial(self) -> bool:
        """Whether a corruption of the id attacks a Q-function (adversarial, not of rewards:
        r' = -EPS r needs none), so the data depend on the attacker too."""
        return any(t.name == "corrupt" and t.args[1] == "adversarial" and t.args[0] != "rew"
                   for t in self.transforms)

    @property
    def mixed_kinds(self) -> list[str]:
        return [t.args[0] for t in self.transforms if t.name == "mix"]


def split(dataset_id: str) -> Variant:
    """`BASE+NAME=ARGS+...` -> Variant; one ValueError naming a bad transform and the forms."""
    base, *parts = dataset_id.split("+")
    transforms, seed = [], 0
    for part in parts:
        name, eq, value = part.partition("=")
        args = value.split(":")
        try:
            if not eq:
                raise ValueError
            if name == "seed":
                seed = int(value)
                if seed < 0:
                    raise ValueError
                continue
            if name == "episodes" and len(args) == 1:
                fraction = float(args[0])
                if not 0.0 < fraction <= 1.0:
                    raise ValueError
                transforms.append(Transform("episodes", (fraction,)))
            elif name == "mix" and len(args) == 2:
                fraction = float(args[1])
                if fraction <= 0.0 or not args[0]:
                    raise ValueError
                transforms.append(Transform("mix", (args[0], fraction)))
            elif name == "corrupt" and len(args) == 4:
                field, kind, rate, eps = args[0], args[1], float(args[2]), float(args[3])
                if field not in FIELDS or not 0.0 < rate <= 1.0 or not eps > 0.0:
                    raise ValueError
                if kind not in KINDS:
                    raise NotImplementedError(kind)
                transforms.append(Transform("corrupt", (field, kind, rate, eps)))
            else:
                raise ValueError
        except NotImplementedError as err:
            raise ValueError(f"dataset '{dataset_id}': +corrupt kind '{err}' is not supported "
                             f"(supported: {list(KINDS)})") from None
        except ValueError:
            raise ValueError(f"dataset '{dataset_id}': bad transform '+{part}'; the forms are "
                             f"{FORMS}") from None
    if not base:
        raise ValueError(f"dataset '{dataset_id}': no base dataset before '+'")
    return Variant(base, tuple(transforms), seed)


def _rng(variant: Variant, index: int) -> np.random.Generator:
    """A generator per (seed, transform position, transform text): the same id, the same draws."""
    text = f"{variant.seed}|{index}|{variant.transforms[index].text}"
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8],
                                                "little"))


def pick_episodes(variant: Variant, index: int, episodes: list, fraction: float,
                  count_of: int) -> list:
    """int(fraction x count_of) episodes (at least 1) of `episodes`, in their order."""
    n = min(len(episodes), max(1, int(fraction * count_of)))
    chosen = np.sort(_rng(variant, index).permutation(len(episodes))[:n])
    return [episodes[i] for i in chosen]


def corrupt(variant: Variant, index: int, flat: dict[str, np.ndarray],
            clean: dict[str, np.ndarray] | None = None, task: str = "") -> np.ndarray:
    """Apply the index-th transform (a corruption) to the flat arrays in place; returns the
    indices of the corrupted transitions. clean, task: the transitions before any corruption
    and their task, which the adversarial kind's Q-function learns from."""
    field, kind, rate, eps = variant.transforms[index].args
    key = FIELDS[field]
    rng = _rng(variant, index)
    size = len(flat["rewards"])
    rows = np.sort(rng.choice(size, size=int(rate * size), replace=False))
    if kind == "adversarial":
        from offbench.data import adversarial

        adversarial.corrupt(field, eps, rows, rng, flat, flat if clean is None else clean, task)
        return rows
    values = flat[key]
    if field == "rew":
        values[rows] = rng.uniform(-REWARD_RANGE * eps, REWARD_RANGE * eps, len(rows))
    else:
        std = values.std(0)
        noise = rng.uniform(-eps, eps, (len(rows), values.shape[1])) * std
        values[rows] = values[rows] + noise
        if field == "act":
            values[rows] = np.clip(values[rows], -1.0, 1.0)
    flat[key] = values.astype(np.float32)
    return rows


def describe(dataset_id: str) -> str:
    """The transforms of an id in words (reports)."""
    variant = split(dataset_id)
    words = [re.sub(r"^\+", "", t.text) for t in variant.transforms]
    return ", ".join(words + ([f"seed {variant.seed}"] if variant.transforms else []))
