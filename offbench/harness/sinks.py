"""Logging sinks beside metrics.csv (which the training loop always writes, atomically).

- `tensorboard`: tensorboardX event files in CELL/tensorboard, one scalar per metric and seed
  (`seed0/eval_return`, ...) against the loop's step (updates or env steps). Event files are
  append-only streams, not atomic files: reports never read them.
- `wandb`: Weights & Biases in offline mode (no network; `wandb sync` uploads later), only if
  the package is installed; otherwise the sink is skipped with a printed reason.

A sink receives each chunk's new rows (one dict per seed and evaluation) as they are written
(`write`); `ProgressSink` instead gets each evaluation period's rows as it ends (`period`).
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SINKS = ("tensorboard", "wandb")
STEP_COLUMNS = ("updates", "env_steps", "step")
SKIP = {"seed", "period", *STEP_COLUMNS}


def _step(row: dict) -> int:
    for column in STEP_COLUMNS:
        if column in row:
            return int(row[column])
    return int(row.get("period", 0))


class TensorBoardSink:
    def __init__(self, folder: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(folder / "tensorboard"))

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            for key, value in row.items():
                if key not in SKIP and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(f"seed{int(row['seed'])}/{key}", value, _step(row))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, folder: Path, config: dict):
        import wandb

        self.run = wandb.init(mode="offline", dir=str(folder), project="offbench",
                              name=folder.name, config=config, reinit=True)

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self.run.log({f"seed{int(row['seed'])}/{k}": v for k, v in row.items()
                          if k not in SKIP}, step=_step(row))

    def close(self) -> None:
        self.run.finish()


class ProgressSink:
    """One log line per evaluation period for a cell (`offbench run` and sweeps): where the
    loop is of its total, the mean evaluation over seeds, the time since the cell started and
    the estimated time left, so even a short run shows it moving. Called through the loops'
    `on_period` (driver.Progress), not with the chunk rows the logging sinks get."""

    def __init__(self, label: str, log: Callable[[str], None] = print):
        self.label, self.log = label, log
        self.start = time.perf_counter()

    def period(self, rows: list[dict], progress: Any) -> None:
        scores = [row["normalized_score"] for row in rows
                  if math.isfinite(row.get("normalized_score", math.nan))]
        returns = [row["eval_return"] for row in rows
                   if math.isfinite(row.get("eval_return", math.nan))]
        if scores:
            result = f"score {sum(scores) / len(scores):.1f}"
        elif returns:
            result = f"return {sum(returns) / len(returns):.1f}"
        else:
            result = "no finite evaluation"
        seeds = "1 seed" if len(rows) == 1 else f"mean of {len(rows)} seeds"
        percent = 100 * progress.period // progress.periods
        eta = f", ETA {duration(progress.eta_s)}" if progress.period < progress.periods else ""
        self.log(f"    {self.label}: {progress.where} ({percent}%): {result} ({seeds}), "
                 f"{duration(time.perf_counter() - self.start)}{eta}")

    def close(self) -> None:
        pass


def duration(seconds: float) -> str:
    """'42 s', '12 min', '3.5 h': a progress line's times."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def open_sinks(names: tuple[str, ...] | list[str], folder: Path, config: dict,
               log: Callable[[str], None] = print) -> list[Any]:
    """The sinks named (unknown names are an error; W&B without its package is skipped)."""
    unknown = set(names) - set(SINKS)
    if unknown:
        raise ValueError(f"unknown logging sinks {sorted(unknown)}; valid: {list(SINKS)} "
                         "(metrics.csv is always written)")
    opened: list[Any] = []
    for name in names:
        if name == "tensorboard":
            opened.append(TensorBoardSink(folder))
        elif importlib.util.find_spec("wandb") is None:
            log("wandb sink skipped: the wandb package is not installed "
                "(pip install -c constraints.txt -e '.[wandb]'; make setup installs it)")
        else:
            opened.append(WandbSink(folder, config))
    return opened
