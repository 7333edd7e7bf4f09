"""`offbench datasets report`: results/datasets.md (+ .csv), one row per task and kind: size,
episodes, mean/min/max return, normalized score, TQ, SACo, and the reference scores, with the
behaviour policies' returns and the command that produced the table. Navigation (PointMaze,
AntMaze) rows: an episode's return is 1 if it reached its goal, so the normalized score is 100 x
the fraction of the data's whole episodes that succeed; no SACo (no full-replay reference)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

import offbench.envs as envs
from offbench import policies
from offbench.data import DatasetName, load
from offbench.data import stats as data_stats
from offbench.data.ids import kinds
from offbench.io import write_text_atomic
from offbench.provenance import record


def dataset_row(name: DatasetName, root: str | Path | None, reference=None) -> dict:
    data = load(name.short, root)
    lengths = data.metadata["episode_lengths"]
    ref_min, ref_max = policies.reference_scores(name.task)
    row = {"task": name.task, "kind": name.kind, "id": name.short}
    row.update(data_stats.summary(np.asarray(data.rewards), np.asarray(data.terminals), lengths,
                                  ref_min, ref_max, envs.get_spec(name.task).episode_length))
    row["saco"] = (math.nan if reference is None else  # navigation: no full-replay reference
                   data_stats.saco(np.asarray(data.observations), np.asarray(data.actions),
                                   *reference))
    row.update(ref_min=ref_min, ref_max=ref_max, sha256=data.metadata["build"]["sha256"][
        "data/main_data.hdf5"][:12])
    return row


def table(tasks: list[str], size: int, root: str | Path | None, log=print) -> pd.DataFrame:
    rows = []
    for task in tasks:
        reference = None
        if "full-replay" in kinds(task):
            ref = load(DatasetName(task, "full-replay", size).short, root)
            reference = (np.asarray(ref.observations), np.asarray(ref.actions))
        for kind in kinds(task):
            name = DatasetName(task, kind, size)
            log(f"stats: {name.short}")
            rows.append(dataset_row(name, root, reference))
    return pd.DataFrame(rows)


def write_report(df: pd.DataFrame, out: Path, command: str, size: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".csv"), df.to_csv(index=False))
    shown = df[["task", "kind", "transitions", "episodes", "whole_episodes", "return_mean",
                "return_min", "return_max", "normalized", "tq", "saco", "ref_min", "ref_max",
                "sha256"]]
    policy_rows = policies.reference_table()
    policy_rows = policy_rows[policy_rows.task.isin(df.task.unique())]
    prov = record()
    trained, unfinished = [], []
    for task in df.task.unique():
        if isinstance(envs.get_spec(task), envs.MazeSpec):
            continue  # a scripted controller (offbench/data/maze2d.py), no policies
        manifest = policies.manifest(task)
        info = manifest["training_run"]
        expert = manifest["policies"]["expert"]["return_mean"]
        bar = policies.PUBLISHED_SAC_1M.get(task)
        verdict = ("" if bar is None else f"; expert return {expert:.1f}, "
                   f"{'at or above' if expert >= bar else 'SHORT of'} published SAC at 1M "
                   f"env steps (>= {bar:.0f})")
        # a run stopped short on purpose says why in its manifest (training_run.stopped_early);
        # one that merely has not finished yet makes the whole report provisional
        stopped = info.get("stopped_early")
        why = f" (stopped there on purpose: {stopped['reason']})" if stopped else ""
        # D4RL's medium is "about one third" of the expert; snapshots are 10k env steps apart,
        # so the nearest one can be well off when the score jumps between two of them
        medium = manifest["policies"].get("medium", {}).get("normalized")
        medium_text = ("" if medium is None else f"; medium {medium:.1f} normalized (goal "
                       f"{100 * policies.MEDIUM_FRACTION:.1f}: the nearest snapshot)")
        trained.append(f"- {task}: SAC trained for {info['trained_env_steps']:,} of "
                       f"{info['target_env_steps']:,} planned env steps{why}{verdict}"
                       f"{medium_text}")
        if info["trained_env_steps"] < info["target_env_steps"] and not stopped:
            unfinished.append(task)
    warning = ([f"**PROVISIONAL**: the behaviour policies of {', '.join(unfinished)} come from "
                "SAC runs that have not reached their planned length (see below); the expert "
                "and medium levels, reference scores and every number here will change when "
                "they are re-selected from the finished runs.", ""] if unfinished else [])
    policies_section = [
        "## Behaviour policies (tasks/policies)",
        "",
        "Returns of the stochastic policies as they act in the datasets (100 episodes for "
        "expert, medium and the random reference; 20 for replay snapshots).",
        "",
        *trained,
        "",
        policy_rows.to_markdown(index=False, floatfmt=".4g"),
        "",
    ] if trained else []  # navigation datasets only: a scripted controller, no policies
    text = "\n".join([
        "# Datasets",
        "",
        f"Produced by `{command}` at commit `{prov.get('git_commit')}` on {prov.get('date')}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores.",
        "",
        *warning,
        f"{size:,} transitions per dataset (medium-expert: medium + expert, twice that). "
        "Returns are over whole episodes (ended by termination or the task's time limit); "
        "normalized = 100 * (return - ref_min) / (ref_max - ref_min); TQ and SACo as in "
        "\"A Dataset Perspective on Offline RL\" (SACo relative to the task's full-replay "
        "dataset; see offbench/data/stats.py for our continuous-space adaptation). "
        "sha256: first 12 hex digits of the dataset's main_data.hdf5. Navigation (pointmaze, "
        "antmaze) rows: reference scores 0 and 1, so normalized = 100 x the fraction of "
        "episodes that reach their goal; an AntMaze episode also ends, with return 0, when the "
        "ant flips (docs/datasets.md).",
        "",
        shown.to_markdown(index=False, floatfmt=".3g"),
        "",
        *policies_section,
    ])
    write_text_atomic(out, text)


# ---- dataset variants (ids with transforms, offbench/data/transforms.py) ---------------------

VARIANTS_OUT = "results/datasets/variants.md"  # `datasets report ID+...` without --out


def full_replay_reference(task: str, size: int, root: str | Path | None
                          ) -> tuple[np.ndarray, np.ndarray] | None:
    """The observations and actions SACo counts against (the task's full-replay dataset of the
    same size), None when it is not built."""
    from offbench.data import DatasetError

    try:
        ref = load(DatasetName(task, "full-replay", size).short, root)
    except (DatasetError, FileNotFoundError, ValueError):
        return None
    return np.asarray(ref.observations), np.asarray(ref.actions)


def variant_extras(data, root: str | Path | None, reference=None) -> dict:
    """What `datasets info` adds for any dataset: its transforms and seed, and SACo against
    the full-replay dataset of its base's task and size (None when that is not built or the
    base is not one of ours)."""
    from offbench.data import parse, transforms

    variant = transforms.split(data.dataset_id)
    saco = None
    try:
        name = parse(variant.base)
    except ValueError:
        name = None  # a Minari dataset made elsewhere: no reference of ours
    if name is not None and reference is None:
        reference = full_replay_reference(name.task, name.size, root)
    if reference is not None:
        saco = data_stats.saco(np.asarray(data.observations), np.asarray(data.actions),
                               *reference)
    return {"transforms": transforms.describe(data.dataset_id) or "none", "saco": saco}


def variant_row(dataset_id: str, root: str | Path | None) -> dict:
    """The statistics of any dataset id, transforms included (computed on the transformed
    data: its episodes, returns, TQ and SACo), with its base's reference scores and hash."""
    from offbench.data import transforms

    data = load(dataset_id, root)
    meta = data.metadata
    ref_min, ref_max = meta["ref_min"], meta["ref_max"]
    row = {"id": dataset_id, "task": data.task, "base": transforms.split(dataset_id).base}
    row.update(data_stats.summary(np.asarray(data.rewards), np.asarray(data.terminals),
                                  meta["episode_lengths"], ref_min, ref_max,
                                  envs.get_spec(data.task).episode_length))
    extras = variant_extras(data, root)
    row.update(transforms=extras["transforms"],
               saco=float("nan") if extras["saco"] is None else extras["saco"])
    sha = meta["build"].get("sha256", {}).get("data/main_data.hdf5", "")
    row.update(ref_min=ref_min, ref_max=ref_max, base_sha256=sha[:12])
    return row


def write_variants_report(ids: list[str], out: Path, command: str, root: str | Path | None,
                          log=print) -> pd.DataFrame:
    """`offbench datasets report ID+TRANSFORM...`: one row per id (plain ids too, for
    comparison), written to out (+ .csv)."""
    rows = []
    for dataset_id in ids:
        log(f"stats: {dataset_id}")
        rows.append(variant_row(dataset_id, root))
    df = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".csv"), df.to_csv(index=False))
    prov = record()
    shown = df[["id", "transforms", "transitions", "episodes", "whole_episodes", "return_mean",
                "return_min", "return_max", "normalized", "tq", "saco", "base_sha256"]]
    write_text_atomic(out, "\n".join([
        "# Dataset variants", "",
        f"Produced by `{command}` at commit `{prov.get('git_commit')}` on {prov.get('date')}; "
        f"machine: {prov['machine']['cpu']}, {prov['machine']['cores']} cores.", "",
        "Statistics of the data as the loader returns it for each id, transforms applied "
        "(offbench/data/transforms.py): returns over whole episodes (ended by termination or "
        "the task's time limit); normalized = 100 * (return - ref_min) / (ref_max - ref_min) "
        "with the base dataset's reference scores; TQ and SACo as in \"A Dataset Perspective "
        "on Offline RL\" (SACo against the task's full-replay dataset of the base's size, "
        "empty when that is not built; offbench/data/stats.py). A corruption changes returns "
        "only through the rewards it replaces, and SACo through the observations and actions "
        "it moves. base_sha256: first 12 hex digits of the base dataset's main_data.hdf5.", "",
        shown.to_markdown(index=False, floatfmt=".3g"), ""]))
    return df
