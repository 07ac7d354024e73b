"""Suite files: validation errors (one line, naming file and key) and plan expansion."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from heartbench.errors import UserError
from heartbench.suite import load_suite, run_id_of

REPO = Path(__file__).resolve().parent.parent

VALID = """
[suite]
benchmark = "synth"
data_root = "data/synth"
seeds = [0, 1]

[backbone]
name = "vit_test"

[train]
epochs = 3
warmup_epochs = 1

[[methods]]
name = "lora"
config = { rank = 4 }
grid = { scale = [0.1, 1.0, 10.0] }

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = { rank = 8 }
grid = { ne = [1, 3] }
per_task = { colors = { ne = 6 } }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as info:
        load_suite(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "suite.toml") in message
    return message


def test_plan_counts_follow_grids_seeds_and_per_task_overrides(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, VALID))
    tasks = ["colors", "stripes", "position"]
    lora = [r for r in suite.runs if r.method == "lora"]
    heart = [r for r in suite.runs if r.method == "heart_lora"]
    assert len(lora) == len(tasks) * 3 * 2
    # per_task fixes ne on 'colors' (grid removed there): 1 point x 2 seeds; others 2 x 2
    assert len(heart) == 1 * 2 + 2 * 2 * 2
    assert {r.method_config["ne"] for r in heart if r.task == "colors"} == {6}
    assert {r.grid["ne"] for r in heart if r.task != "colors"} == {1, 3}
    expected = set(itertools.product(tasks, [0.1, 1.0, 10.0], [0, 1]))
    assert {(r.task, r.method_config["scale"], r.seed) for r in lora} == expected
    assert len({r.run_id for r in suite.runs}) == len(suite.runs)
    assert all(r.label == "lora" for r in lora) and all(r.label == "Heart-LoRA" for r in heart)


def test_run_id_is_stable_and_ignores_location_and_launcher(tmp_path: Path) -> None:
    a = load_suite(write(tmp_path, VALID))
    b = load_suite(write(tmp_path, VALID.replace('"data/synth"', '"/elsewhere"')
                         + '\n[launcher]\nexecutor = "debug"\n'))
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs]
    assert a.runs[0].run_id == run_id_of(a.runs[0].identity())
    c = load_suite(write(tmp_path, VALID.replace("epochs = 3", "epochs = 4")))
    assert not {r.run_id for r in a.runs} & {r.run_id for r in c.runs}


def test_val_protocol_searches_inside_one_run(tmp_path: Path) -> None:
    text = VALID.replace('seeds = [0, 1]', 'seeds = [0]\neval_protocol = "val"')
    suite = load_suite(write(tmp_path, text))
    lora = [r for r in suite.runs if r.method == "lora"]
    assert len(lora) == 3 and all(r.search == {"scale": [0.1, 1.0, 10.0]} for r in lora)


@pytest.mark.parametrize("text, fragment", [
    (VALID.replace("[train]", "[train\n"), "malformed TOML"),
    (VALID.replace("epochs = 3", "epoch = 3"), "unknown key train.epoch (did you mean 'epochs'?)"),
    (VALID.replace("epochs = 3", 'epochs = "3"'), "train.epochs must be int"),
    (VALID.replace("epochs = 3", "epochs = 0"), "train.epochs must be > 0"),
    (VALID.replace("warmup_epochs = 1", "warmup_epochs = 5"), "warmup_epochs (5) must be smaller"),
    (VALID.replace('name = "lora"', 'name = "lorra"'), "unknown method 'lorra' (did you mean 'lora'?)"),
    (VALID.replace('name = "vit_test"', 'name = "vit_nonexistent_xyz"'), "backbone.name"),
    (VALID.replace('benchmark = "synth"', 'benchmark = "vtab2k"'), "suite.benchmark"),
    (VALID.replace('seeds = [0, 1]', 'seeds = [0, 1]\ntasks = ["colours"]'), "unknown synth task 'colours' (did you mean 'colors'?)"),
    (VALID.replace("rank = 4", "rank = -2"), "rank must be a positive integer"),
    (VALID.replace("rank = 8", "rank = 8, bits = 3"), "bits: 3 is not supported"),
    (VALID.replace("ne = [1, 3]", "ne = [1, 12]"), "ne=12 must be smaller than the number of heads (12)"),
    (VALID.replace("rank = 4", "rnak = 4"), "unknown key 'rnak' (did you mean 'rank'?)"),
    (VALID.replace("rank = 4", "rank = 4.5"), "key 'rank' must be int"),
    (VALID.replace("grid = { scale = [0.1, 1.0, 10.0] }", "grid = { scale = 0.1 }"), "grid.scale must be a non-empty list"),
    (VALID + '\n[launcher]\nexecutor = "slurmm"\n', "launcher.executor"),
    (VALID + "\n[extra]\nx = 1\n", "unknown table [extra]"),
    (VALID.replace('data_root = "data/synth"\n', ""), "missing required key suite.data_root"),
    (VALID.replace('seeds = [0, 1]', 'seeds = [-1]'), "suite.seeds must be a non-empty list"),
], ids=lambda v: v if len(v) < 60 else None)
def test_bad_suites_give_one_line_naming_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    assert fragment in error_of(tmp_path, text)


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("[train]", "[train\n"))
    assert "line" in message


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_suite(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "suites").glob("*.toml")))
def test_shipped_suites_are_valid(name: str) -> None:
    suite = load_suite(REPO / "suites" / name)
    assert suite.runs


def test_vtab1k_plan_covers_19_tasks() -> None:
    suite = load_suite(REPO / "suites" / "vtab1k.toml")
    assert len({r.task for r in suite.runs}) == 19
    bilora = {r.task: r.method_config["scale"] for r in suite.runs if r.method == "bilora"}
    assert bilora["cifar"] == 0.1 and bilora["dtd"] == 0.01 and bilora["svhn"] == 10
