"""Methods and tasks from outside the package: a plugin file in a temporary folder, an
installed entry point, a task folder of one's own; and what a broken plugin says."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from heartbench import plugins
from heartbench.adapters import METHODS
from heartbench.cli import main
from heartbench.suite import load_suite

PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters import Delta, MethodConfig, QKVMethod, register


class TwoFactor(Delta):
    def __init__(self, d_in, d_out, rank):
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, d_in) * 0.02)
        self.B = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x):
        return x @ self.delta_weight().t()

    def delta_weight(self):
        return self.B @ self.A


@dataclass
class TwoFactorConfig(MethodConfig):
    rank: int = 2
    targets: str = "qv"


@register("{name}")
class TwoFactorMethod(QKVMethod):
    config_cls = TwoFactorConfig

    def make_delta(self, d_in, d_out):
        return TwoFactor(d_in, d_out, self.config.rank)
'''

SUITE = '''
[suite]
name = "mine"
benchmark = "synth"
data_root = "{data}"
tasks = ["colors"]
seeds = [0]
plugins = ["{plugin}"]

[tasks.shapes]
root = "own/shapes"
num_classes = 4

[backbone]
name = "vit_test"

[train]
epochs = 1
warmup_epochs = 0
batch_size = 32
max_train_batches = 1

[launcher]
executor = "local"

[[methods]]
name = "{name}"
label = "Two-Factor"

[[methods]]
name = "lora"
label = "LoRA"
config = {{ rank = 2 }}
'''


@pytest.fixture
def forget_plugins():
    """Plugins loaded by a test are unregistered afterwards."""
    before = set(METHODS)
    yield
    for name in set(METHODS) - before:
        del METHODS[name]
        plugins.PLUGIN_OF.pop(name, None)
    plugins._LOADED.clear()


def _project(tmp: Path, name: str = "two_factor") -> Path:
    """A user's folder: plugin, own task folder (synthetic images), suite."""
    from heartbench.data.synth import write_synth

    (tmp / "plugins").mkdir()
    (tmp / "plugins" / f"{name}.py").write_text(PLUGIN.format(name=name))
    write_synth(tmp / "synth_src", tasks=["colors"])
    (tmp / "own").mkdir()
    shutil.copytree(tmp / "synth_src" / "colors", tmp / "own" / "shapes")
    suite = tmp / "suite.toml"
    suite.write_text(SUITE.format(data=tmp / "synth", plugin=f"plugins/{name}.py", name=name))
    return suite


def test_a_plugin_and_an_own_task_run_table_and_list(tmp_path, capsys, forget_plugins):
    suite = _project(tmp_path)
    results = tmp_path / "results"
    # Local executor: the runs train in fresh worker processes, which import the plugin.
    assert main(["run", str(suite), "--results-dir", str(results)]) == 0
    records = [json.loads(p.read_text()) for p in sorted((results / "mine").glob("*.json"))]
    assert {(r["method"], r["task"], r["status"]) for r in records} == {
        (m, t, "done") for m in ("two_factor", "lora") for t in ("colors", "shapes")}
    source = tmp_path / "plugins" / "two_factor.py"
    for record in records:
        if record["method"] == "two_factor":
            assert record["plugin"]["file"] == str(source.resolve())
            assert record["plugin"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        else:
            assert "plugin" not in record
        if record["task"] == "shapes":
            assert record["group"] == "Custom"
            assert record["custom_task"]["root"] == str((tmp_path / "own" / "shapes").resolve())

    capsys.readouterr()
    assert main(["tables", "--results-dir", str(results), "--out", str(tmp_path / "paper"),
                 "--benchmarks", "synth", "--no-figures", "--pdf", "skip"]) == 0
    table = (tmp_path / "paper" / "table1_synth.tex").read_text()
    assert "Two-Factor" in table and "shapes" in table.lower() and "Custom" in table
    acc = next(r["metrics"]["test_acc"] for r in records
               if r["method"] == "two_factor" and r["task"] == "shapes")
    assert f"{acc:.1f}" in table.split("Two-Factor", 1)[1].split("\\\\")[0]

    assert main(["methods", "--backbone", "vit_test", "--suite", str(suite)]) == 0
    listed = capsys.readouterr().out
    assert "two_factor" in listed and str(source.resolve()) in listed

    # Editing the plugin gives its runs new ids (LoRA's keep theirs); status says why.
    old = {(r.method, r.task): r.run_id for r in load_suite(suite).runs}
    source.write_text(source.read_text() + "\n# tuned\n")
    new = {(r.method, r.task): r.run_id for r in load_suite(suite).runs}
    assert new[("lora", "colors")] == old[("lora", "colors")]
    assert new[("two_factor", "colors")] != old[("two_factor", "colors")]
    capsys.readouterr()
    assert main(["status", str(suite), "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(new[("two_factor", "colors")]))
    assert "plugin source changed" in line and old[("two_factor", "colors")] in line


def test_editing_a_plugin_changes_only_its_run_ids(tmp_path, forget_plugins):
    suite = _project(tmp_path)
    first = load_suite(suite).runs
    source = tmp_path / "plugins" / "two_factor.py"
    source.write_text(source.read_text().replace("* 0.02", "* 0.03"))
    second = load_suite(suite).runs
    for a, b in zip(first, second):
        assert (a.run_id == b.run_id) == (a.method == "lora")
        if a.method == "two_factor":
            assert b.plugin["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_builtin_runs_keep_their_ids(tmp_path, forget_plugins):
    """The new RunSpec keys enter the identity only when set: a committed suite's ids stay."""
    import heartbench.suite as s

    spec = load_suite("suites/smoke.toml").runs[0]
    assert spec.plugin is None and spec.custom_task is None
    assert s.run_id_of(spec.identity()) == spec.run_id
    assert set(spec.identity()) == {"benchmark", "task", "shots", "method", "method_config",
                                    "search", "backbone", "train", "seed", "eval_protocol"}


BROKEN = {
    "syntax": ("def oops(:\n", "failed to import: line 1: SyntaxError"),
    "raises": ("import numpy\nraise RuntimeError('no GPU here')\n",
               "failed to import: line 2: RuntimeError: no GPU here"),
    "taken": (PLUGIN.format(name="lora"), "method name 'lora' is taken"),
    "nothing": ("x = 1\n", "registers no method"),
    "no_attach": ("from heartbench.adapters import Method, register\n"
                  "@register('half_done')\nclass HalfDone(Method):\n    pass\n",
                  "must implement attach"),
    "bad_config": ("from dataclasses import dataclass\n"
                   "from heartbench.adapters import Method, MethodConfig, register\n"
                   "@dataclass\nclass C(MethodConfig):\n    rank: int\n"
                   "@register('no_default')\nclass M(Method):\n    config_cls = C\n"
                   "    def attach(self, backbone):\n        pass\n",
                   "must build with defaults"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_before_anything_runs(kind, tmp_path, capsys,
                                                          forget_plugins):
    suite = _project(tmp_path)
    source = tmp_path / "plugins" / "two_factor.py"
    text, expected = BROKEN[kind]
    source.write_text(text)
    before = set(METHODS)
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(source.resolve()) in err and expected in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "synth").exists()
    assert set(METHODS) == before  # nothing half-registered


def test_a_missing_plugin_file_is_named(tmp_path, capsys, forget_plugins):
    suite = _project(tmp_path)
    (tmp_path / "plugins" / "two_factor.py").unlink()
    assert main(["run", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"plugin {(tmp_path / 'plugins' / 'two_factor.py').resolve()} does not exist" in err


def test_an_installed_entry_point_announces_a_method(tmp_path, monkeypatch, forget_plugins):
    site = tmp_path / "site"
    (site / "ep_methods").mkdir(parents=True)
    (site / "ep_methods" / "__init__.py").write_text("")
    (site / "ep_methods" / "impl.py").write_text(PLUGIN.format(name="from_entry_point"))
    dist = site / "ep_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[heartbench.methods]\nmine = ep_methods.impl\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    from heartbench.adapters import get_method_class

    cls = get_method_class("from_entry_point")
    assert cls.name == "from_entry_point"
    origin = plugins.plugin_of("from_entry_point")
    assert origin.how == "module" and origin.module == "ep_methods.impl"
    assert origin.sha256 == hashlib.sha256((site / "ep_methods/impl.py").read_bytes()).hexdigest()
    sys.modules.pop("ep_methods.impl", None)
    sys.modules.pop("ep_methods", None)


def test_data_verify_checks_the_suites_own_tasks(tmp_path, capsys, forget_plugins):
    suite = _project(tmp_path)
    assert main(["data", "verify", "--suite", str(suite)]) == 0
    assert "shapes" in capsys.readouterr().out
    folder = tmp_path / "own" / "shapes"
    assert main(["data", "verify", str(folder), "--num-classes", "4"]) == 0
    capsys.readouterr()
    # Three classes declared, labels up to 3 in the lists: each list is named.
    assert main(["data", "verify", str(folder), "--num-classes", "3"]) == 2
    out = capsys.readouterr().out
    assert "FAIL" in out and "label" in out
    lines = (folder / "test.txt").read_text().splitlines()
    (folder / "test.txt").write_text("\n".join(lines + ["images/missing.png 1"]) + "\n")
    assert main(["data", "verify", "--suite", str(suite)]) == 2
    assert "missing" in capsys.readouterr().out


def test_an_own_task_may_not_take_a_registered_name(tmp_path, capsys, forget_plugins):
    suite = _project(tmp_path)
    suite.write_text(suite.read_text().replace("[tasks.shapes]", "[tasks.stripes]"))
    assert main(["run", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "tasks.stripes" in err and "another name" in err


@pytest.mark.slurm
def test_a_plugin_runs_on_the_slurm_cluster(tmp_path, capsys, forget_plugins):
    """Slurm workers import the plugin from the RunSpec too (scripts/slurm-cluster.sh up)."""
    from heartbench import slurm

    if slurm.controller_error() is not None:
        pytest.skip("no Slurm controller answers")
    suite = _project(tmp_path)
    suite.write_text(suite.read_text().replace('executor = "local"', 'executor = "slurm"\n'
                                               'gpus_per_node = 0\ntimeout_min = 10'))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results-dir", str(results)]) == 0
    records = [json.loads(p.read_text()) for p in (results / "mine").glob("*.json")]
    assert {r["method"] for r in records if r["status"] == "done"} == {"two_factor", "lora"}
    assert all("plugin" in r for r in records if r["method"] == "two_factor")



def test_a_suite_names_a_module_plugin(tmp_path, monkeypatch, forget_plugins):
    suite = _project(tmp_path)
    package = tmp_path / "lib" / "my_methods_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "factors.py").write_text(PLUGIN.format(name="two_factor"))
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    suite.write_text(suite.read_text().replace('"plugins/two_factor.py"',
                                               '"my_methods_pkg.factors"'))
    run = next(r for r in load_suite(suite).runs if r.method == "two_factor")
    assert run.plugin == {"module": "my_methods_pkg.factors", "how": "module",
                          "file": str(package / "factors.py"),
                          "sha256": hashlib.sha256((package / "factors.py").read_bytes())
                          .hexdigest()}
    for name in ("my_methods_pkg.factors", "my_methods_pkg"):
        sys.modules.pop(name, None)
