"""Provenance: the commit recorded beside results, and when it is marked dirty."""
import subprocess

from offbench import provenance


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_rewritten_results_do_not_mark_the_code_dirty(tmp_path, monkeypatch):
    (tmp_path / "offbench").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "offbench" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "leaderboard.md").write_text("old\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    clean = provenance.git_commit()
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "results" / "leaderboard.md").write_text("new numbers\n")
    assert provenance.git_commit() == clean  # a report rewriting results/
    (tmp_path / "offbench" / "code.py").write_text("x = 2\n")
    assert provenance.git_commit() == clean + "-dirty"  # the code that ran is not committed
