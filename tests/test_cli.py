"""The `offbench` console script: version, task listing, and one clear error for bad input."""

import subprocess
import sys
from pathlib import Path

import offbench
import offbench.envs as envs
from offbench import policies

OFFBENCH = str(Path(sys.executable).parent / "offbench")


def run(*args):
    return subprocess.run([OFFBENCH, *args], capture_output=True, text=True, timeout=300)


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"offbench {offbench.__version__}"


def test_tasks_lists_sizes_and_backends():
    out = run("tasks")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:] if line.strip()}
    # observation and action sizes of Gymnasium's v5 envs (their documented spaces)
    expected = {"halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6), "ant": (105, 8)}
    for task, (obs, act) in expected.items():
        assert task in rows, out.stdout
        assert (int(rows[task][2]), int(rows[task][3])) == (obs, act)
        # the reference scores normalization uses, as measured and committed with the policies
        ref_min, ref_max = policies.reference_scores(task)
        assert (float(rows[task][5]), float(rows[task][6])) == (round(ref_min, 1),
                                                                 round(ref_max, 1))
        assert "mjx" in out.stdout and "mujoco" in out.stdout


def test_tasks_table_is_not_split_by_mujoco_warnings():
    # unbuffered, with stderr into the same pipe as a terminal shows them: MuJoCo's compiler
    # warning about half_cheetah.xml's `settotalmass` comes once, before the table, never
    # between its rows
    import os

    out = subprocess.run([OFFBENCH, "tasks"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    assert sum("settotalmass" in line for line in lines) <= 1
    header = next(i for i, line in enumerate(lines) if line.startswith("task "))
    table = lines[header + 1:lines.index("", header)]
    assert [line.split()[0] for line in table] == envs.task_names(), out.stdout


def test_unknown_task_in_perf_is_one_clear_error():
    out = run("perf", "envs", "--tasks", "humanoid", "--out", "/tmp/offbench-should-not-exist")
    assert out.returncode == 2
    assert "unknown task 'humanoid'" in out.stderr and "Traceback" not in out.stderr
    assert not Path("/tmp/offbench-should-not-exist").exists()


def test_records_the_offbench_command_however_the_process_was_started(monkeypatch):
    # started as `python -c "from offbench.cli import main; main()" ...`, argv[0] is "-c": the
    # command a run.json or report records must still be one that reruns it
    from offbench import cli, provenance

    seen = {}

    def policies_list(args):
        seen["command"] = provenance.record()["command"]
        return 0
    monkeypatch.setattr(sys, "argv", ["-c", "policies", "list", "a b", "--seed", "3"])
    monkeypatch.setattr(cli, "cmd_policies", policies_list)
    assert cli.main() == 0
    assert seen["command"] == "offbench policies list 'a b' --seed 3"
    assert provenance.COMMAND is None  # restored: the next command in this process is its own
