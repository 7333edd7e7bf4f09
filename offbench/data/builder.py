"""Building datasets: vectorized rollouts of the committed behaviour policies, written as Minari
datasets. Deterministic from a seed: the same command gives byte-identical files.

Kinds (D4RL's, made from tasks/policies/TASK): `random` (uniform random actions), `medium`,
`expert` (the stochastic behaviour policy), `medium-expert` (the medium dataset followed by the
expert dataset, so 2x the size, as in D4RL), `medium-replay` and `full-replay` (equal shares of
the replay snapshots, evenly spaced in training time up to `medium` and up to `expert`).
PointMaze's kinds `maze2d` (D4RL's maze2d: a noisy PD waypoint controller, no policy file) and
`fixed` (the same trajectory relabeled to the evaluation goal, as D4RL evaluates) are made by
offbench/data/maze2d.py; AntMaze's `play` and `diverse` (D4RL's antmaze kinds: the ant waypoint
policy along the planner's waypoints, tasks/policies/ant-nav) by offbench/data/antmaze.py.
Their reference scores are 0 and 1, success's (`policies.reference_scores`).

A build is staged in a temporary folder beside the data root and moved into place by one rename,
after its sha256 sidecar (`offbench.json`) is written: an interrupted build leaves nothing the
loader would accept.

Physics states (the policy-made locomotion kinds): beside Minari's files, `data/qpos.npy` and
`data/qvel.npy` (`PHYSICS_FILES`, float32, written by np.save: deterministic bytes) hold each
transition's start physics state, one row per transition in the loader's flattened order (the
state whose observation is the transition's observation), with their sha256 under
`physics_sha256` in the sidecar (not part of `dataset_fingerprint`, not checked by every load:
only where the loader is asked for `physics`). They feed the true-dynamics oracle (offbench/
models/rollouts.py), whose states rebuilt from observations are inexact where Hopper and
Walker2d clip velocities and impossible for Ant. Collecting them leaves the Minari files byte
for byte as they were. A dataset built before they existed is kept as it is (the loader then
has no `physics` for it, and the oracle rebuilds states from observations): `build` says so,
and `--force` rebuilds it with them (its transitions come out byte-identical). Kept rather than
rebuilt as stale, because sweeps call `build` on every dataset they use, and regenerating every
existing dataset would cost minutes to hours of simulation each time the code is updated.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import numpy as np

import offbench
import offbench.envs as envs
from offbench import policies
from offbench.data import antmaze, maze2d
from offbench.data.ids import DatasetName, data_root
from offbench.io import write_text_atomic
from offbench.loops import rollout
from offbench.provenance import record

SIDECAR = "offbench.json"
DATA_FILES = ("data/main_data.hdf5", "data/metadata.json")
PHYSICS_FILES = {"qpos": "data/qpos.npy", "qvel": "data/qvel.npy"}  # sidecar: physics_sha256
MAX_ENVS = 64
STEPS_PER_ENV = 5000  # at least this many steps per env stream, so few episodes are cut short


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kind_parts(task: str, kind: str) -> list[tuple[str, list[str] | None]]:
    """(part, behaviour policy names) in order; None means uniform random actions."""
    if kind == "random":
        return [("random", None)]
    if kind in ("medium", "expert"):
        return [(kind, [kind])]
    if kind == "medium-expert":
        return [("medium", ["medium"]), ("expert", ["expert"])]
    if kind in ("medium-replay", "full-replay"):
        return [(kind, list(policies.manifest(task)["replay_policies"][kind]))]
    raise ValueError(f"unknown dataset kind '{kind}'")


def _is_maze(task: str) -> bool:
    return isinstance(envs.get_spec(task), envs.MazeSpec)


def _is_antmaze(task: str) -> bool:
    return _is_maze(task) and envs.get_spec(task).agent == "ant"


def policy_hashes(task: str, kind: str) -> dict[str, str]:
    """sha256 of each committed policy a dataset of `kind` is generated from (as recorded in
    its sidecar's `policies_sha256`); none for PointMaze (a scripted controller)."""
    if _is_antmaze(task):
        return antmaze.policy_hashes()
    if _is_maze(task):
        return {}
    committed = policies.manifest(task)["policies"] if kind != "random" else {}
    return {n: committed[n]["sha256"] for _, names in kind_parts(task, kind) for n in names or ()}


def _part_key(seed: int, part: str) -> jax.Array:
    # The medium part of medium-expert is the medium dataset, byte for byte: keys depend on the
    # part's name, not on the kind being built.
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(part.encode()))


def _policy(task: str, names: list[str] | None, num_envs: int
            ) -> tuple[rollout.Policy, dict[str, str]]:
    env = envs.make(task)
    if names is None:
        return policies.uniform_policy(env.action_size), {}
    loaded = [policies.load_policy(task, n) for n in names]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *[p.params for p in loaded])
    assignment = np.arange(num_envs) % len(loaded)
    act = policies.mixture_policy(loaded[0].hidden, env.action_size, stacked, assignment)
    return act, {p.name: p.sha256 for p in loaded}


def episodes_from_streams(data: dict[str, np.ndarray], size: int) -> Iterator[dict]:
    """Cut per-env streams [num_envs, steps, ...] into episodes, env after env, until `size`
    transitions. An episode cut by the end of a stream or by `size` ends as a truncation."""
    remaining = size
    num_envs, steps = data["rewards"].shape
    for e in range(num_envs):
        ends = np.flatnonzero((data["terminals"][e] > 0) | (data["timeouts"][e] > 0))
        starts = np.r_[0, ends + 1]
        stops = np.r_[ends + 1, steps]
        for start, stop in zip(starts, stops, strict=True):
            stop = min(stop, start + remaining)
            if stop <= start:
                continue
            terminations = data["terminals"][e, start:stop] > 0
            truncations = data["timeouts"][e, start:stop] > 0
            truncations[-1] = not terminations[-1]  # a stream or budget cut is a truncation
            yield {"observations": np.concatenate([data["observations"][e, start:stop],
                                                   data["next_observations"][e, stop - 1:stop]]),
                   "actions": data["actions"][e, start:stop],
                   "rewards": data["rewards"][e, start:stop],
                   "terminations": terminations, "truncations": truncations,
                   # each transition's start physics state, when collected (PHYSICS_FILES)
                   **{k: data[k][e, start:stop] for k in PHYSICS_FILES if k in data}}
            remaining -= stop - start
            if remaining == 0:
                return


def generate(task: str, kind: str, size: int, seed: int, log: Callable = print
             ) -> tuple[list[dict], dict[str, str]]:
    """The episodes of one dataset (host arrays) and the hashes of the policies used."""
    if _is_antmaze(task):  # the ant waypoint policy (offbench/data/antmaze.py)
        if kind not in antmaze.KINDS:
            raise ValueError(f"unknown dataset kind '{kind}' for task '{task}'")
        log(f"  {kind}: {'x'.join(map(str, antmaze.stream_shape(size)))} steps (ant-nav "
            f"controller, action noise {antmaze.NAV.noise})")
        data = antmaze.generate(task, kind, size, seed)
        return list(episodes_from_streams(data, size)), antmaze.policy_hashes()
    if _is_maze(task):  # one trajectory of the waypoint controller (offbench/data/maze2d.py)
        if kind not in maze2d.KINDS:
            raise ValueError(f"unknown dataset kind '{kind}' for task '{task}'")
        log(f"  {kind}: 1 trajectory x {size} steps (waypoint controller, action noise "
            f"{maze2d.CONTROLLER.noise})")
        data = maze2d.stream(task, size, maze2d.dataset_key(seed))
        if kind == maze2d.FIXED_KIND:  # the same trajectory, relabeled to the evaluation goal
            data = maze2d.relabel_to_eval_goal(task, data, seed)
        return list(episodes_from_streams(data, size)), {}
    episodes: list[dict] = []
    hashes: dict[str, str] = {}
    env = envs.make(task)
    for part, names in kind_parts(task, kind):
        count = 1 if names is None else len(names)
        num_envs = max(count, min(MAX_ENVS, size // STEPS_PER_ENV))
        num_envs = math.ceil(num_envs / count) * count  # every policy gets the same env count
        steps = math.ceil(size / num_envs)
        act, part_hashes = _policy(task, names, num_envs)
        hashes.update(part_hashes)
        log(f"  {part}: {num_envs} envs x {steps} steps"
            + (f" ({', '.join(names)})" if names else " (uniform random actions)"))
        data = rollout.collect(env, act, _part_key(seed, part), num_envs, steps, physics=True)
        data["actions"] = np.asarray(rollout.to_env_action(env, data["actions"]))
        episodes.extend(episodes_from_streams(data, size))
    return episodes, hashes


@contextlib.contextmanager
def _minari_root(path: Path):
    """Minari reads its root from MINARI_DATASETS_PATH; point it at `path` for a moment."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(root: Path, minari_id: str, episodes: list[dict], task: str,
                 metadata: dict) -> None:
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    env = envs.make(task)
    low, high = env.unwrapped.action_bounds
    obs_space = gym.spaces.Box(-np.inf, np.inf, (env.observation_size,), np.float32)
    act_space = gym.spaces.Box(np.asarray(low, np.float32), np.asarray(high, np.float32))
    buffers = [EpisodeBuffer(id=i, observations=ep["observations"], actions=ep["actions"],
                             rewards=ep["rewards"], terminations=ep["terminations"],
                             truncations=ep["truncations"], infos={})
               for i, ep in enumerate(episodes)]
    # The maze tasks' Gymnasium-Robotics envs are not registered without that (test-only)
    # package, which Minari would make; their datasets name the env in their description.
    # Minari keeps reference scores only for datasets with an env: added to those after.
    gym_env = None if _is_maze(task) else envs.get_spec(task).gymnasium_id
    metadata = dict(metadata)
    refs = {} if gym_env else {k: metadata.pop(k) for k in ("ref_min_score", "ref_max_score")
                               if k in metadata}
    with _minari_root(root), warnings_quiet():
        dataset = minari.create_dataset_from_buffers(
            minari_id, buffers, env=gym_env,
            observation_space=obs_space, action_space=act_space, data_format="hdf5",
            **metadata)
        if refs:
            dataset.storage.update_metadata(refs)


@contextlib.contextmanager
def warnings_quiet():
    """Minari warns about unset optional metadata and gymnasium about the deprecated model
    attribute; neither is actionable here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build(name: DatasetName, seed: int = 0, root: str | Path | None = None,
          command: str | None = None, force: bool = False, log: Callable = print) -> Path:
    """Build dataset `name` under the data root; returns its folder. An existing dataset built
    with the same seed and policies is kept (nothing to do); one built from other behaviour
    policies or reference scores (tasks/policies re-selected since) is stale and rebuilt;
    `force` rebuilds it."""
    root = data_root(root)
    final = name.path(root)
    ref_min, ref_max = policies.reference_scores(name.task)
    if final.exists() and not force:
        sidecar = final / SIDECAR
        if sidecar.exists():
            info = json.loads(sidecar.read_text())
            if info.get("seed") == seed:
                same_refs = info.get("reference_scores") == {"ref_min": ref_min,
                                                             "ref_max": ref_max}
                if info.get("policies_sha256") == policy_hashes(name.task, name.kind) \
                        and same_refs and info.get("behaviour") == behaviour(name.task,
                                                                             name.kind):
                    log(f"{name.short}: already built in {final}")
                    if "physics_sha256" not in info and not _is_maze(name.task):
                        files = ", ".join(PHYSICS_FILES.values())
                        log(f"{name.short}: built without physics states ({files}); kept as "
                            "it is, and the true-dynamics "
                            "oracle rebuilds its states from observations. `offbench datasets "
                            f"build {name.short} --force` adds them (the transitions come out "
                            "byte-identical)")
                    return final
                # generated data of ours: rebuilt deterministically from the committed
                # policies, and the old folder is replaced only once the new one is complete.
                # A random dataset has no policy but records the reference scores that
                # normalize its scores, which change with the expert.
                log(f"{name.short}: built from other behaviour policies or reference scores "
                    "than tasks/policies now holds; rebuilding")
                force = True
        if not force:
            raise FileExistsError(f"{final} already exists (built with other settings, or not by "
                              "offbench); pass --force to rebuild it")
    log(f"{name.short}: generating {name.size} transitions per part (seed {seed})")
    episodes, hashes = generate(name.task, name.kind, name.size, seed, log)
    command = command or f"offbench datasets build {name.short} --seed {seed}"
    provenance = record()
    made_by = ("ant waypoint SAC actor along the planner's waypoints, offbench/data/antmaze.py"
               if _is_antmaze(name.task) else
               "D4RL maze2d waypoint controller, offbench/data/maze2d.py" if _is_maze(name.task)
               else "SAC actors, tasks/policies")
    metadata = {
        "algorithm_name": f"offbench {name.kind} behaviour ({made_by})",
        "author": "offbench", "author_email": "offbench maintainers",
        "code_permalink": f"offbench {offbench.__version__} at commit "
                          f"{provenance.get('git_commit')}",
        "ref_min_score": ref_min, "ref_max_score": ref_max,
        "description": f"{name.kind} dataset for the offbench task '{name.task}' "
                       f"(Gymnasium {envs.get_spec(name.task).gymnasium_id} semantics), "
                       f"{name.size} transitions per part, seed {seed}. Made by `{command}`.",
    }
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        write_minari(staging, name.minari_id, episodes, name.task, metadata)
        built = staging / name.minari_id
        physics = write_physics(built, episodes)
        sidecar = {
            "id": name.short, "minari_id": name.minari_id, "task": name.task, "kind": name.kind,
            "size": name.size, "transitions": int(sum(len(ep["rewards"]) for ep in episodes)),
            "episodes": len(episodes), "seed": seed, "command": command,
            "sha256": {f: sha256_file(built / f) for f in DATA_FILES},
            "policies_sha256": hashes,
            **({"physics_sha256": physics} if physics else {}),
            **({"behaviour": behaviour(name.task, name.kind)}
               if behaviour(name.task, name.kind) else {}),
            "reference_scores": {"ref_min": ref_min, "ref_max": ref_max},
            "version": offbench.__version__, "git_commit": provenance.get("git_commit"),
            "versions": provenance.get("versions"),
        }
        write_text_atomic(built / SIDECAR, json.dumps(sidecar, indent=2))
        _copy_namespace_metadata(staging, root, name.minari_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # --force: the old dataset goes only once the new one is complete
            shutil.rmtree(final)
        os.replace(built, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{name.short}: {len(episodes)} episodes -> {final}")
    return final


def write_physics(built: Path, episodes: list[dict]) -> dict[str, str]:
    """The episodes' start physics states as PHYSICS_FILES under `built` (one row per transition,
    in the loader's flattened order), and their sha256; nothing when they were not collected."""
    if not all(k in ep for ep in episodes for k in PHYSICS_FILES):
        return {}
    out = {}
    for key, rel in PHYSICS_FILES.items():
        np.save(built / rel, np.concatenate([ep[key] for ep in episodes]).astype(np.float32))
        out[rel] = sha256_file(built / rel)
    return out


def behaviour(task: str, kind: str = maze2d.KIND) -> dict | None:
    """The scripted behaviour a dataset of `task` and `kind` records (the maze controller's
    parameters, and the relabeling for `fixed`; None for the policy-made kinds, whose
    policies' hashes are recorded)."""
    if _is_antmaze(task):
        return antmaze.record(kind)
    return maze2d.record(kind) if _is_maze(task) else None


def _copy_namespace_metadata(staging: Path, root: Path, minari_id: str) -> None:
    """Minari keeps namespace_metadata.json at every namespace level; give the root them too."""
    parts = minari_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        rel = Path(*parts[:depth]) / "namespace_metadata.json"
        if (staging / rel).exists() and not (root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staging / rel, root / rel)


def dataset_fingerprint(dataset: str) -> str | None:
    """A hash of a built offbench dataset's content (the sha256 of its transitions file,
    data/main_data.hdf5, and its reference scores, from its offbench.json), so a rebuilt dataset
    with other data or reference scores gives new cells, and one rebuilt byte-identically keeps
    them (Minari's metadata.json is left out: it records the code commit that built it). None
    for datasets not built by offbench (Minari's own: their id is their identity) and for
    offbench datasets not built yet."""
    from offbench.data import transforms
    from offbench.data.ids import DatasetName, parse
    from offbench.io import config_hash

    variant = transforms.split(dataset)
    if variant.transforms:  # a variant: its base's content (and any mixed kind's) and its id
        try:
            base = parse(variant.base)
        except ValueError:
            base = None
        parts = [dataset_fingerprint(variant.base)] + [
            dataset_fingerprint(DatasetName(base.task, kind, base.size).short)
            for kind in variant.mixed_kinds if base is not None]
        if None in parts:
            return None
        if variant.adversarial:  # and the attacker's settings (offbench/data/adversarial.py)
            from offbench.data import adversarial

            return config_hash({"parts": parts, "id": dataset, "attack": adversarial.settings()})
        return config_hash({"parts": parts, "id": dataset})
    try:
        name = parse(dataset)
    except ValueError:
        return None
    sidecar = name.path() / SIDECAR
    if not sidecar.exists():
        return None
    record = json.loads(sidecar.read_text())
    return config_hash({"data": (record.get("sha256") or {}).get(DATA_FILES[0]),
                        "reference_scores": record.get("reference_scores")})


def physics_fingerprint(dataset: str) -> str | None:
    """A hash of the physics states a built offbench base dataset carries (its sidecar's
    physics_sha256), None for one without them, a variant or another's dataset. Not part of
    `dataset_fingerprint` (cells of every algorithm keep their ids when a dataset gains them);
    a true-dynamics cell adds it to its identity (harness/cells.resolve), so its results from
    states rebuilt from observations and from the stored states are separate cells."""
    from offbench.data import transforms
    from offbench.data.ids import parse
    from offbench.io import config_hash

    if transforms.split(dataset).transforms:
        return None
    try:
        sidecar = parse(dataset).path() / SIDECAR
    except ValueError:
        return None
    recorded = json.loads(sidecar.read_text()).get("physics_sha256") if sidecar.exists() \
        else None
    return config_hash(recorded) if recorded else None
