"""The published AntMaze settings of each module (MAZE_SETTINGS, issue 24): valid Config values,
not defaults (locomotion cells keep their ids), and the ones the navigation sweep specs apply."""

import dataclasses
from pathlib import Path

import pytest

from offbench.algorithms import load_algorithm
from offbench.harness import sweep

SPECS = Path(__file__).resolve().parents[1] / "tasks" / "sweeps"
MODULES = ("iql", "rebrac", "spot", "cql", "cal_ql", "wsrl", "rlpd")
UNSET = ("hidden",)  # network sizes are the specs' (CPU budgets), not part of the settings


def settings_for(module, dataset_key: str) -> dict:
    settings = module.MAZE_SETTINGS
    if all(isinstance(v, dict) for v in settings.values()):  # per dataset (TASK-KIND)
        return settings[dataset_key]
    return settings


@pytest.mark.parametrize("name", MODULES)
def test_maze_settings_are_config_values_and_not_defaults(name):
    module = load_algorithm(name)
    settings = module.MAZE_SETTINGS
    per_dataset = settings.values() if all(isinstance(v, dict) for v in settings.values()) \
        else [settings]
    default = module.Config()
    for values in per_dataset:
        applied = dataclasses.replace(default, **values)  # unknown fields raise
        assert applied != default  # they change something: settings, not the defaults
    assert load_algorithm("iql").Config().expectile == 0.7  # defaults stay the locomotion ones


def diagnosed(spec: dict, algorithm: str) -> set[str]:
    """The settings a diagnosis spec may change on purpose: those its algorithms_set sets."""
    if not spec["name"].endswith("-diagnosis"):
        return set()
    items = spec.get("algorithms_set", {}).get(algorithm, {}).get("set", [])
    return {item.split("=")[0] for item in items}


@pytest.mark.parametrize("spec", sorted(SPECS.glob("nav-*.toml")))
def test_navigation_specs_apply_the_modules_maze_settings(spec):
    loaded = sweep.load_spec(spec)
    cells = sweep.expand(loaded, log=lambda *_: None)
    checked = 0
    for cell in cells:
        c = cell.config
        module = load_algorithm(c["algorithm"])
        if not hasattr(module, "MAZE_SETTINGS"):
            continue
        dataset = sweep.dataset_key(c["dataset"].split("@")[0])
        expected = settings_for(module, dataset)
        resolved = module.Config(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in c["algo_config"].items()})
        changed = diagnosed(loaded, c["algorithm"])
        for key, value in expected.items():
            if key not in UNSET and key not in changed:  # a diagnosis may change one (beta)
                assert getattr(resolved, key) == value, (spec.name, c["algorithm"], key)
        checked += 1
    assert checked > 0
