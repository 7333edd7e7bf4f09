"""Loading datasets to device: Minari datasets (ours, or any recorded on a Gymnasium MuJoCo v5
env) -> flat transitions as JAX arrays, checked before use.

Fields: observations, actions (in [-1, 1], the policies' units), rewards, next_observations,
terminals (true terminations only), timeouts (episodes cut by a time limit or by the end of the
data). On request: `mc_returns` (discounted Monte-Carlo return-to-go within the episode, for
Cal-QL), `next_actions` (the action taken at the next step of the same episode; the episode's
last action is repeated at its end, for ReBRAC), `obs_mean`/`obs_std` (for normalization),
`physics` (each transition's start physics state, qpos ++ qvel, float32: the true-dynamics
oracle's start states, offbench/models/rollouts.py), given only for offbench's own datasets
that carry it (builder.PHYSICS_FILES, sha256-checked) and are not variants (a transform
changes or reselects transitions): elsewhere it is left out, and `metadata["physics"]` says why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import struct

import offbench.envs as envs
from offbench.algorithms import OBS_STD_EPS
from offbench.data import ids
from offbench.data.builder import PHYSICS_FILES, SIDECAR, sha256_file, warnings_quiet

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
# derived fields an algorithm may ask for (DATASET_FIELDS), and all the loader can derive
ALGORITHM_FIELDS = ("mc_returns", "next_actions")
# `physics`: asked for by the offline loop for a true-dynamics model-based algorithm, not by
# DATASET_FIELDS (it is optional: absent where the dataset does not carry it)
DERIVED = (*ALGORITHM_FIELDS, "obs_mean", "obs_std", "physics")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says why and what to do."""


@struct.dataclass
class Dataset:
    """Flat transitions as host (numpy) arrays; `extra` holds the derived fields asked for. They
    stay on the host until a loop has prepared them (standardization, reward maps, the
    algorithm's `prepare_dataset`), which copies them to the device once."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    extra: dict = struct.field(default_factory=dict)
    task: str = struct.field(pytree_node=False, default="")
    dataset_id: str = struct.field(pytree_node=False, default="")
    metadata: dict = struct.field(pytree_node=False, default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.rewards.shape[0])


def minari_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def local_datasets(root: str | Path | None = None) -> list[str]:
    """Short ids of the offbench datasets built under the data root."""
    base = ids.data_root(root) / ids.NAMESPACE
    found = []
    for sidecar in sorted(base.glob(f"*/*/{SIDECAR}")):
        found.append(json.loads(sidecar.read_text())["id"])
    return found


def resolve(dataset_id: str, root: str | Path | None = None) -> tuple[Path, bool]:
    """(dataset folder, is ours). Ours: short ids and offbench/... ids under the data root.
    Others: Minari ids under Minari's root ($MINARI_DATASETS_PATH or ~/.minari/datasets)."""
    if "/" in dataset_id and not dataset_id.startswith(f"{ids.NAMESPACE}/"):
        path = minari_root() / dataset_id
        if not (path / "data").exists():
            raise DatasetError(f"no Minari dataset '{dataset_id}' in {minari_root()}; download "
                               f"it with `minari download {dataset_id}` (or set "
                               "MINARI_DATASETS_PATH)")
        return path, False
    try:
        name = ids.parse(dataset_id)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    path = name.path(root)
    if not path.exists():
        have = local_datasets(root)
        raise DatasetError(f"dataset '{dataset_id}' is not built in {ids.data_root(root)}; build "
                           f"it with `offbench datasets build {name.short}` (built: "
                           f"{', '.join(have) or 'none'})")
    return path, True


def _check_sidecar(path: Path) -> dict:
    sidecar = path / SIDECAR
    if not sidecar.exists():
        raise DatasetError(f"{path} has no {SIDECAR}: an incomplete or foreign build; rebuild it "
                           "with `offbench datasets build ID --force`")
    info = json.loads(sidecar.read_text())
    for rel, expected in info["sha256"].items():
        file = path / rel
        if not file.exists():
            raise DatasetError(f"{file} is missing; rebuild with `offbench datasets build "
                               f"{info['id']} --force`")
        actual = sha256_file(file)
        if actual != expected:
            raise DatasetError(f"checksum mismatch for {file}: sha256 {actual[:16]}... but the "
                               f"build recorded {expected[:16]}...; the file was changed or "
                               f"damaged; rebuild with `offbench datasets build {info['id']} "
                               "--force`")
    return info


def _task_for(env_id: str | None, task: str | None) -> str:
    if task is not None:
        envs.get_spec(task)
        return task
    for name in envs.task_names():
        if envs.get_spec(name).gymnasium_id == env_id:
            return name
    known = ", ".join(f"{t}={envs.get_spec(t).gymnasium_id}" for t in envs.task_names())
    raise DatasetError(f"the dataset was recorded on '{env_id}', which matches no offbench task "
                       f"({known}); pass task=... to say which task to evaluate it on")


def read_episodes(path: Path) -> tuple[list[dict], dict]:
    """All episodes of the Minari dataset in `path` and its metadata, with clear errors."""
    from minari import MinariDataset

    try:
        with warnings_quiet():
            dataset = MinariDataset(path / "data")
            metadata = dict(dataset.storage.metadata)
            episodes = list(dataset.storage.get_episodes(range(dataset.storage.total_episodes)))
    except (OSError, KeyError, ValueError, AssertionError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read the Minari dataset in {path}: it is truncated or "
                           f"corrupted ({type(err).__name__}: {err}); rebuild or re-download it"
                           ) from None
    return episodes, metadata


def flatten(episodes: list[dict]) -> dict[str, np.ndarray]:
    """Episodes (observations of length T+1) -> flat transitions."""
    cat = np.concatenate
    out = {
        "observations": cat([ep["observations"][:-1] for ep in episodes]),
        "next_observations": cat([ep["observations"][1:] for ep in episodes]),
        "actions": cat([ep["actions"] for ep in episodes]),
        "rewards": cat([ep["rewards"] for ep in episodes]),
        "terminals": cat([ep["terminations"] for ep in episodes]),
        "timeouts": cat([ep["truncations"] for ep in episodes]),
    }
    out = {k: np.asarray(v, np.float32) for k, v in out.items()}
    out["episode_lengths"] = np.array([len(ep["rewards"]) for ep in episodes], np.int64)
    return out


def mc_returns(rewards: np.ndarray, lengths: np.ndarray, discount: float) -> np.ndarray:
    """Discounted reward-to-go within each episode (float64 accumulation)."""
    out = np.empty(len(rewards), np.float64)
    start = 0
    for length in lengths:
        acc = 0.0
        for t in range(start + length - 1, start - 1, -1):
            acc = rewards[t] + discount * acc
            out[t] = acc
        start += length
    return out.astype(np.float32)


def next_actions(actions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    out = np.empty_like(actions)
    out[:-1] = actions[1:]
    ends = np.cumsum(lengths) - 1
    out[ends] = actions[ends]
    return out


def physics_states(path: Path, ours: bool, variant: Any, transitions: int, verify: bool
                   ) -> tuple[np.ndarray | None, str | None]:
    """(transitions, nq + nv) start physics states of a dataset's transitions (qpos ++ qvel), or
    None and why it has none. Damaged or misaligned files are an error."""
    if not ours:
        return None, "not an offbench dataset (no physics states)"
    if variant.transforms:
        return None, "a variant: its transforms change or reselect the transitions"
    info = json.loads((path / SIDECAR).read_text()) if (path / SIDECAR).exists() else {}
    recorded = info.get("physics_sha256")
    if not recorded:
        return None, (f"built without physics states (rebuild with `offbench datasets build "
                      f"{info.get('id', 'ID')} --force` to add them)")
    parts = []
    for rel in PHYSICS_FILES.values():
        file = path / rel
        if not file.exists() or (verify and sha256_file(file) != recorded.get(rel)):
            raise DatasetError(f"{file} is missing or does not match its recorded sha256; "
                               f"rebuild with `offbench datasets build {info['id']} --force`")
        parts.append(np.load(file))
    if any(p.ndim != 2 or p.shape[0] != transitions for p in parts):
        raise DatasetError(f"{path}: the physics states ({[p.shape for p in parts]}) do not "
                           f"match the {transitions} transitions; rebuild with `offbench "
                           f"datasets build {info['id']} --force`")
    return np.concatenate(parts, 1).astype(np.float32), None


def _episode_transforms(variant: Any, episodes: list[dict], root: str | Path | None,
                        verify: bool) -> list[dict]:
    """Scarcity (+episodes) and mixtures (+mix) of a variant, in the order written."""
    from offbench.data import transforms
    from offbench.data.ids import DatasetName, parse

    base_count = len(episodes)
    for index, transform in enumerate(variant.transforms):
        if transform.name == "episodes":
            episodes = transforms.pick_episodes(variant, index, episodes, transform.args[0],
                                                len(episodes))
        elif transform.name == "mix":
            kind, fraction = transform.args
            try:
                name = parse(variant.base)
                other = DatasetName(name.task, kind, name.size)
                parse(other.short)  # a known kind
            except ValueError as err:
                raise DatasetError(f"+mix={kind}:{fraction} needs an offbench base dataset and "
                                   f"a kind of it: {err}") from None
            path, _ = resolve(other.short, root)
            if verify:
                _check_sidecar(path)
            added, _ = read_episodes(path)
            episodes = episodes + transforms.pick_episodes(variant, index, added, fraction,
                                                           base_count)
    return episodes


def load(dataset_id: str, root: str | Path | None = None, task: str | None = None,
         derived: tuple[str, ...] = (), discount: float = 0.99, verify: bool = True) -> Dataset:
    """Open a dataset and check it (host arrays; the loops copy them to the device once).

    dataset_id: our short id (`hopper-medium-replay`), our Minari id, or another Minari id
    (`mujoco/halfcheetah/expert-v0`, looked up in Minari's root). task: the offbench task to
    evaluate on (default: the one whose Gymnasium id the dataset was recorded on).
    verify: check our datasets' sha256 against their build record (reads every byte once).
    """
    from offbench.data import transforms

    unknown = set(derived) - set(DERIVED)
    if unknown:
        raise DatasetError(f"unknown derived fields {sorted(unknown)}; available: {DERIVED}")
    variant = transforms.split(dataset_id)  # `BASE+TRANSFORM...` (offbench/data/transforms.py)
    path, ours = resolve(variant.base, root)
    info = _check_sidecar(path) if ours and verify else {}
    episodes, metadata = read_episodes(path)
    if not episodes:
        raise DatasetError(f"{path} holds no episodes")
    episodes = _episode_transforms(variant, episodes, root, verify)
    env_spec = metadata.get("env_spec")
    env_id = json.loads(env_spec).get("id") if isinstance(env_spec, str) else None
    task = info.get("task") or _task_for(env_id, task)
    flat = flatten(episodes)
    env = envs.make(task)
    if flat["observations"].shape[1] != env.observation_size:
        raise DatasetError(f"{dataset_id}: observations have {flat['observations'].shape[1]} "
                           f"features but task '{task}' has {env.observation_size}; pick the "
                           "matching task")
    if flat["actions"].shape[1] != env.action_size:
        raise DatasetError(f"{dataset_id}: actions have {flat['actions'].shape[1]} dimensions "
                           f"but task '{task}' has {env.action_size}")
    for field in FIELDS:
        bad = ~np.isfinite(flat[field])
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DatasetError(f"{dataset_id}: field '{field}' holds {int(bad.sum())} NaN/Inf "
                               f"values (first at transition {row}); the dataset is unusable")
    low, high = (np.asarray(b, np.float32) for b in env.unwrapped.action_bounds)
    if not (np.all(low == -1.0) and np.all(high == 1.0)):  # to the policies' [-1, 1]
        flat["actions"] = (2.0 * (flat["actions"] - low) / (high - low) - 1.0).astype(np.float32)
    corrupted = {}
    clean = ({k: v.copy() for k, v in flat.items()} if variant.adversarial else None)
    # (the transitions before any corruption: what the adversarial kind's Q-function learns)
    for index, transform in enumerate(variant.transforms):
        if transform.name == "corrupt":
            corrupted[transform.text] = transforms.corrupt(variant, index, flat, clean, task)
    extra: dict[str, Any] = {}
    if "mc_returns" in derived:
        extra["mc_returns"] = mc_returns(flat["rewards"], flat["episode_lengths"], discount)
    if "next_actions" in derived:
        extra["next_actions"] = next_actions(flat["actions"], flat["episode_lengths"])
    if "obs_mean" in derived or "obs_std" in derived:
        extra["obs_mean"] = flat["observations"].mean(0)
        extra["obs_std"] = flat["observations"].std(0) + OBS_STD_EPS
    physics_absent = None
    if "physics" in derived:
        physics, physics_absent = physics_states(path, ours, variant, len(flat["rewards"]),
                                                 verify)
        if physics is not None:
            extra["physics"] = physics
    meta = {"path": str(path), "ours": ours, "episode_lengths": flat["episode_lengths"],
            "ref_min": metadata.get("ref_min_score"), "ref_max": metadata.get("ref_max_score"),
            "minari_metadata": metadata, "build": info,
            "transforms": [tr.text for tr in variant.transforms], "transform_seed": variant.seed,
            "corrupted_rows": corrupted, "physics": physics_absent}
    return Dataset(**{k: flat[k] for k in FIELDS},
                   extra={k: np.asarray(v) for k, v in extra.items()}, task=task,
                   dataset_id=dataset_id, metadata=meta)
