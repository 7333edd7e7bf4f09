"""Where a number came from: machine, versions, git commit, command (for reports and run.json)."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        # results/ is what reports write: rewriting it is not a change of the code that ran
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for pkg in ("offbench", "jax", "jaxlib", "mujoco", "mujoco-mjx", "brax", "gymnasium", "flax",
                "optax"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, object]:
    import jax
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "jax_backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}


# The command to record instead of this process's argv: set where the process is not the one
# the user started (a Ray worker running a sweep's cell records the sweep's command).
COMMAND: str | None = None


def command_line() -> str:
    if COMMAND is not None:
        return COMMAND
    argv = [Path(sys.argv[0]).name] + sys.argv[1:]
    return " ".join(shlex.quote(a) for a in argv)


def record() -> dict[str, object]:
    return {"command": command_line(), "git_commit": git_commit(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions()}
