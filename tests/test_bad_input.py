"""Bad input through the real command line: one line, exit code 2, nothing written.

Each case runs ``python -m heartbench run ...`` in its own process (two at a time: each
one imports torch and timm) and checks that stderr is exactly one line
``heartbench run: error: ...`` naming the file, key or path and what was expected, that
stdout is empty, and that no file was created or changed anywhere the command could write.
A property-based test then mutates a valid suite at random and runs ``run --dry-run``
in process: every outcome is a plan (exit 0) or that one-line error (exit 2).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbench.cli import main as cli

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PREFIX = "heartbench run: error: "

VALID = """\
[suite]
name = "bad"
benchmark = "synth"
data_root = "{data}"
tasks = ["colors"]
seeds = [0]

[backbone]
name = "vit_test"
weights = "{weights}"

[train]
epochs = 2
warmup_epochs = 1
batch_size = 16

[[methods]]
name = "heart_lora"
label = "Heart-LoRA"
config = {{ rank = 8, bits = 1, ne = 3 }}
"""


@dataclass
class Case:
    """One bad input: the suite text (or file) and what the one-line error must say."""

    name: str
    expect: list[str]  # fragments of the error line, in any order
    text: str | None = None  # the suite; None: ``suite`` names a file that is not written
    data: str = "good"  # which data folder the suite points at
    weights: str = ""  # file name under the case folder for backbone.weights ("" = none)
    results: str = "results"  # results dir, relative to the case folder
    suite_bytes: bytes | None = None
    extra: list[str] = field(default_factory=list)


def base(*changes: str) -> str:
    """VALID with text replacements, each written 'old=>new'."""
    text = VALID
    for change in changes:
        old, new = change.split("=>")
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


CASES = [
    # -- the suite file itself (no torch needed: these are fast) -------------------------
    Case("suite-missing", ["{suite}", "does not exist"], text=None),
    Case("malformed-toml", ["{suite}", "malformed TOML", "(at line {train_line}, column"],
         text=base("[train]=>[train")),
    Case("not-utf8", ["{suite}", "not a UTF-8 text file"],
         suite_bytes=b'[suite]\nname = "\xff\xfe"\n'),
    Case("misspelled-key", ["{suite}", "unknown key train.epoch", "(did you mean 'epochs'?)"],
         text=base("epochs = 2=>epoch = 2")),
    Case("unknown-table", ["{suite}", "unknown table [trian]", "(did you mean 'train'?)"],
         text=base("[train]=>[trian]")),
    Case("wrong-type", ["{suite}", "train.epochs must be int", "got str '2'"],
         text=base('epochs = 2=>epochs = "2"')),
    Case("missing-table", ["{suite}", "missing required table [backbone]"],
         text=base("[backbone]=>", 'name = "vit_test"=>', 'weights = "{weights}"=>')),
    # -- values that need the method or backbone (these import torch) ----------------------
    Case("misspelled-config-key", ["{suite}", "methods[0].config", "unknown key 'rnak'",
                                   "(did you mean 'rank'?)"], text=base("rank = 8=>rnak = 8")),
    Case("ne-too-large", ["{suite}", "ne=12 must be smaller than the number of heads (12)"],
         text=base("ne = 3=>ne = 12")),
    Case("negative-rank", ["{suite}", "rank must be a positive integer, got -2"],
         text=base("rank = 8=>rank = -2")),
    Case("bits", ["{suite}", "bits: 3 is not supported", "(1, 2, 4, 8, 32)"],
         text=base("bits = 1=>bits = 3")),
    Case("unknown-task", ["{suite}", "suite.tasks", "unknown synth task 'colours'",
                          "(did you mean 'colors'?)"], text=base('"colors"=>"colours"')),
    Case("unknown-method", ["{suite}", "methods[0].name", "unknown method 'heart_lroa'",
                            "(did you mean 'heart_lora'?)"],
         text=base('name = "heart_lora"=>name = "heart_lroa"')),
    Case("unknown-backbone", ["{suite}", "backbone.name", "unknown backbone 'vit_tset'",
                              "(did you mean 'vit_test'?)"],
         text=base('name = "vit_test"=>name = "vit_tset"')),
    # -- data -------------------------------------------------------------------------------
    Case("missing-data-root", ["{data}", "does not exist", "train800val200.txt"],
         text=base('benchmark = "synth"=>benchmark = "vtab1k"',
                   'tasks = ["colors"]=>tasks = ["cifar"]'), data="absent"),
    Case("missing-list-file", ["missing list file {data}/colors/test.txt", "expected",
                               "'images/x.jpg <label>'"], text=VALID, data="no-list"),
    Case("missing-image", ["{data}/colors/test.txt", "listed image", "does not exist"],
         text=VALID, data="no-image"),
    Case("line-without-label", ["{data}/colors/train800val200.txt line 3",
                                "has no label", "expected"], text=VALID, data="no-label"),
    Case("label-out-of-range", ["{data}/colors/train800val200.txt line 2", "label 9",
                                "outside [0, 4)", "4 classes"], text=VALID, data="big-label"),
    # -- weights ----------------------------------------------------------------------------
    Case("weights-missing", ["weights file {case}/nope.pth does not exist"],
         text=VALID, weights="nope.pth"),
    Case("weights-not-a-checkpoint", ["weights file {case}/garbage.pth",
                                      "is not a readable checkpoint"],
         text=VALID, weights="garbage.pth"),
    Case("weights-other-architecture", ["weights file {case}/wide.pth",
                                        "is for another architecture",
                                        "key 'cls_token' has shape (1, 1, 96),"
                                        " expected (1, 1, 48)"],
         text=VALID, weights="wide.pth"),
    Case("npz-other-architecture", ["weights file {case}/wide.npz",
                                    "is for another architecture: the tensor for"
                                    " 'patch_embed.proj.weight' has shape (96, 3, 8, 8),"
                                    " expected (48, 3, 8, 8)"], text=VALID, weights="wide.npz"),
    Case("npz-more-blocks", ["weights file {case}/deep.npz", "it has 3 blocks, the model 2",
                             "'Transformer/encoderblock_2/"], text=VALID, weights="deep.npz"),
    Case("pth-extra-tensor", ["weights file {case}/extra.pth",
                              "unexpected key 'blocks.1.attn.extra' (shape (5, 2)"],
         text=VALID, weights="extra.pth"),
    Case("swin-microsoft-other-architecture",
         ["weights file {case}/swin_wide.pth", "key 'patch_embed.proj.weight' has shape"
          " (32, 3, 4, 4), expected (16, 3, 4, 4)"],
         text=base('name = "vit_test"=>name = "swin_test"', 'name = "heart_lora"=>name = "lora"',
                   "config = {{ rank = 8, bits = 1, ne = 3 }}=>config = {{ rank = 8 }}"),
         weights="swin_wide.pth"),
    # -- what a worker would fail on ------------------------------------------------------------
    Case("heart-without-warmup", ["{suite}", "methods[0]: heart_lora", "needs at least one"
                                  " warm-up epoch", "set train.warmup_epochs >= 1"],
         text=base("warmup_epochs = 1=>warmup_epochs = 0")),
    Case("fewshot-val-without-val-list", ["missing list file {data}/animals/annotations/"
                                          "val_meta.list"],
         text=base('benchmark = "synth"=>benchmark = "fewshot_mini"',
                   'tasks = ["colors"]=>tasks = ["animals"]\nshots = [1]\n'
                   'eval_protocol = "val"',
                   # a twin schedule that trains before Heart-LoRA scores (1 step/epoch)
                   'epochs = 2=>epochs = 3',
                   'warmup_epochs = 1=>warmup_epochs = 2\nwarmup_per_step = true'),
         data="fewshot-no-val"),
    Case("heart-scored-before-training", ["{suite}", "methods[0]: heart_lora on animals",
                                          "would not have trained",
                                          "set train.warmup_per_step = true"],
         text=base('benchmark = "synth"=>benchmark = "vtab_mini"',
                   'tasks = ["colors"]=>tasks = ["animals"]')),
    Case("corrupt-image", ["image {data}/colors/images/train/", "cannot be decoded",
                           "Truncated"], text=VALID, data="corrupt"),
    # -- the results directory ----------------------------------------------------------------
    Case("results-not-writable", ["results directory {case}/afile/results is not writable",
                                  "is a file, not a folder"], text=VALID, results="afile/results"),
]

if not __import__("torch").cuda.is_available():  # the case needs a machine without CUDA
    CASES.append(Case("cuda-without-gpu", ["{suite}", "train.device = 'cuda'",
                                           "no CUDA device (executor local)"],
                      text=base("batch_size = 16=>batch_size = 16\ndevice = \"cuda\""),
                      extra=["--executor", "local"]))


def make_data(root: Path) -> dict[str, Path]:
    """The synthetic dataset and broken copies of it (each breaks one thing in 'colors')."""
    from heartbench.data.synth import write_synth

    good = root / "good"
    write_synth(good)
    variants = {"good": good, "absent": root / "absent"}
    for name in ("no-list", "no-image", "no-label", "big-label"):
        copy = root / name
        shutil.copytree(good / "colors", copy / "colors")
        variants[name] = copy
    shutil.copytree(good / "colors", root / "corrupt" / "colors")
    variants["corrupt"] = root / "corrupt"
    variants["fewshot-no-val"] = fewshot_without_val(root / "fewshot-no-val")
    colors = {name: variants[name] / "colors" for name in variants}
    first = colors["corrupt"] / (colors["corrupt"] / "train800val200.txt").read_text().split()[0]
    first.write_bytes(first.read_bytes()[:300])  # a truncated JPEG: the header survives
    (colors["no-list"] / "test.txt").unlink()
    first_test_image = (colors["no-image"] / "test.txt").read_text().split()[0]
    (colors["no-image"] / first_test_image).unlink()
    for name, edit in (("no-label", lambda parts: parts[0]),
                       ("big-label", lambda parts: f"{parts[0]} 9")):
        path = colors[name] / "train800val200.txt"
        lines = path.read_text().splitlines()
        line = 2 if name == "big-label" else 3
        lines[line - 1] = edit(lines[line - 1].split())
        path.write_text("\n".join(lines) + "\n")
    return variants


def fewshot_without_val(root: Path) -> Path:
    """fewshot_mini's 'animals' with 1-shot train and test lists but no val_meta.list."""
    from PIL import Image

    folder = root / "animals"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    rows = []
    for label in range(10):
        Image.new("RGB", (8, 8), (25 * label, 0, 0)).save(folder / "images" / f"{label}.jpg")
        rows.append(f"{label}.jpg {label}\n")
    (folder / "annotations" / "train_meta.list.num_shot_1.seed_0").write_text("".join(rows))
    (folder / "annotations" / "test_meta.list").write_text("".join(rows))
    return root


def make_weights(case_dir: Path, name: str) -> None:
    from test_checkpoints import google_npz, microsoft_swin, timm_state

    if name == "wide.npz":
        google_npz(timm_state("vit_test", embed_dim=96), heads=12, path=case_dir / name)
    elif name == "deep.npz":
        google_npz(timm_state("vit_test", depth=3), heads=12, path=case_dir / name)
    elif name == "extra.pth":
        import torch

        state = timm_state("vit_test")
        state["blocks.1.attn.extra"] = torch.zeros(5, 2)
        torch.save(state, case_dir / name)
    elif name == "swin_wide.pth":
        microsoft_swin(timm_state("swin_test", embed_dim=32), case_dir / name)
    elif name == "garbage.pth":
        (case_dir / name).write_bytes(os.urandom(4096))
    elif name == "wide.pth":  # the same family, but 96-dimensional
        import timm
        import torch

        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                  patch_size=8, embed_dim=96, depth=2, num_heads=12)
        torch.save(model.state_dict(), case_dir / name)


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and mtime: to prove nothing was written."""
    out = {}
    for root in roots:
        if root.exists():
            out[str(root)] = (0, root.stat().st_mtime_ns)
            for path in root.rglob("*"):
                st = path.stat()
                out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    expect: list[str]
    changed: list[str]
    fresh: bool  # run by a fresh interpreter (else forked from a warm one)


# Runs each case in a child process forked from an interpreter that has already imported
# heartbench, torch and timm: the child executes heartbench/__main__.py exactly as
# ``python -m heartbench`` does, with its own stdout/stderr files and exit code. This
# saves each case ~4 CPU-seconds of imports; FRESH cases (and every case when
# HEARTBENCH_FRESH_CLI=1) start a whole new interpreter instead.
FORK_SERVER = r"""
import json, os, runpy, sys
import heartbench.adapters, heartbench.backbones, heartbench.cli, heartbench.data.fewshot
import heartbench.data.synth, heartbench.data.vtab, heartbench.launch, heartbench.suite
cases = json.load(sys.stdin)
codes = {}
for name, case in cases.items():
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with open(case["stdout"], "w") as out, open(case["stderr"], "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
            os.chdir(case["cwd"])
            sys.argv = ["heartbench", *case["args"]]
            runpy.run_module("heartbench", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    codes[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""
FRESH = {"malformed-toml", "missing-image", "weights-other-architecture"}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Run every case through the CLI and record what happened."""
    root = tmp_path_factory.mktemp("bad_input")
    data = make_data(root / "data")
    jobs = {}
    for case in CASES:
        case_dir = root / case.name
        case_dir.mkdir()
        suite = case_dir / "suite.toml"
        weights = case_dir / case.weights if case.weights else None
        if case.weights:
            make_weights(case_dir, case.weights)
        if case.results.startswith("afile/"):
            (case_dir / "afile").write_text("a regular file, not a folder\n")
        fields = {"data": str(data[case.data]), "weights": str(weights or "")}
        if case.suite_bytes is not None:
            suite.write_bytes(case.suite_bytes)
        elif case.text is not None:
            text = case.text.format(**fields)
            if not case.weights:
                text = text.replace('weights = ""\n', "")
            suite.write_text(text)
            fields["train_line"] = str(1 + next(
                (i for i, line in enumerate(text.splitlines()) if line.startswith("[train")), -1))
        expect = [e.format(suite=suite, case=case_dir, **fields) for e in case.expect]
        # One mistake per case: the local executor, so that a Slurm installed but down here
        # (as on CI machines during the fast tests) is not a second problem `run` names.
        executor = [] if "--executor" in case.extra else ["--executor", "local"]
        args = ["run", str(suite), "--results-dir", str(case_dir / case.results), *case.extra,
                *executor]
        jobs[case.name] = (args, expect, [case_dir, data[case.data]])
    every_case_fresh = os.environ.get("HEARTBENCH_FRESH_CLI") == "1"
    fresh = [n for n in jobs if every_case_fresh or n in FRESH]
    forked = [n for n in jobs if n not in fresh]
    logs = root / "logs"
    logs.mkdir()
    before = {n: snapshot(*jobs[n][2]) for n in jobs}

    def run_fresh(name: str) -> tuple[int, str, str]:
        proc = subprocess.run([sys.executable, "-m", "heartbench", *jobs[name][0]],
                              capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr

    def run_forked() -> dict[str, tuple[int, str, str]]:
        if not forked:
            return {}
        spec = {n: {"args": jobs[n][0], "cwd": str(REPO), "stdout": str(logs / f"{n}.out"),
                    "stderr": str(logs / f"{n}.err")} for n in forked}
        proc = subprocess.run([sys.executable, "-c", FORK_SERVER], input=json.dumps(spec),
                              capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
        assert proc.returncode == 0, proc.stderr
        codes = json.loads(proc.stdout.splitlines()[-1])
        return {n: (codes[n], Path(spec[n]["stdout"]).read_text(),
                    Path(spec[n]["stderr"]).read_text()) for n in forked}

    with ThreadPoolExecutor(max_workers=2) as pool:
        forked_future = pool.submit(run_forked)
        done = dict(zip(fresh, pool.map(run_fresh, fresh)))
        done.update(forked_future.result())
    out = {}
    for name, (code, stdout, stderr) in done.items():
        after = snapshot(*jobs[name][2])
        changed = sorted(set(before[name].items()) ^ set(after.items()))
        out[name] = Outcome(code, stdout, stderr, jobs[name][1], [str(c) for c in changed],
                            name in fresh)
    return out


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
        outcomes: dict[str, Outcome], name: str) -> None:
    out = outcomes[name]
    assert out.returncode == 2, out
    assert out.stdout == "", out
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), out.stderr
    for fragment in out.expect:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert out.changed == [], "the command wrote files"


# Impossible backbone shapes (timm raises assorted exceptions), non-finite numbers and
# out-of-range rates are caught by suite validation.
@pytest.mark.parametrize("edit", [
    'name = "vit_test"=>name = "vit_test"\nkwargs = { depth = -1 }',
    'name = "vit_test"=>name = "vit_test"\nkwargs = { num_heads = 5 }',
    'name = "vit_test"=>name = "vit_test"\nkwargs = { patch_size = 0 }',
    'name = "vit_test"=>name = "vit_test"\ndrop_path_rate = -3.0',
    "batch_size = 16=>batch_size = 16\nlr = nan",
    "batch_size = 16=>batch_size = 16\nlr = inf",
])
def test_impossible_shapes_and_numbers_are_one_line(tmp_path: Path, edit: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    old, new = edit.split("=>")
    text = VALID.format(data=tmp_path / "data", weights="").replace('weights = ""\n', "")
    suite = tmp_path / "suite.toml"
    suite.write_text(text.replace(old, new, 1))
    code = cli(["run", str(suite), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(PREFIX)


# ---------------------------------------------------------------------------
# Property: random mutations of a valid suite never give a traceback
# ---------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document: plain values first, then [tables] and [[arrays of tables]]."""
    head, body = [], []
    for key, value in doc.items():
        name = json.dumps(key)
        if isinstance(value, dict):
            body.append(f"[{name}]")
            body += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                body.append(f"[[{name}]]")
                body += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in item.items()]
        else:
            head.append(f"{name} = {toml_value(value)}")
    return "\n".join(head + body) + "\n"


PROPERTY_SUITE = {
    "suite": {"name": "prop", "benchmark": "synth", "data_root": "data/synth",
              "tasks": ["colors", "stripes"], "seeds": [0, 1], "eval_protocol": "last"},
    "backbone": {"name": "vit_test", "drop_path_rate": 0.1},
    "train": {"epochs": 3, "warmup_epochs": 1, "lr": 5e-3, "batch_size": 16,
              "max_train_batches": 0},
    "launcher": {"executor": "local", "timeout_min": 30},
    "methods": [
        {"name": "lora", "label": "LoRA", "config": {"rank": 4, "scale": 1.0},
         "grid": {"scale": [0.1, 1.0]}},
        {"name": "heart_lora", "label": "Heart-LoRA", "config": {"rank": 8, "ne": 3, "bits": 1},
         "per_task": {"colors": {"ne": 6}}, "train": {"lr": 1e-3}},
    ],
}

GARBAGE = ["", " ", "all", "../../etc/passwd", "~/x", "$HOME", "nan", "∞", "\x00", "é" * 5,
           "colors", "lora", "vit_test", "heart_lora", "synth", "qkv", "auto", "cuda"]
VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 11, 12, 13, 32, 64, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(GARBAGE),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-3, 20), st.sampled_from(GARBAGE)), max_size=3),
    st.dictionaries(st.sampled_from(["rank", "ne", "x", "colors", "scale"]),
                    st.one_of(st.integers(-3, 20), st.text(max_size=3)), max_size=2),
)


def key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key (and list index) path in the document."""
    paths = []
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else [])
    for key, value in items:
        paths.append(prefix + (key,))
        paths += key_paths(value, prefix + (key,))
    return paths


def typo(word: str, data: st.DataObject) -> str:
    if not word:
        return "x"
    i = data.draw(st.integers(0, len(word) - 1))
    kind = data.draw(st.sampled_from(["drop", "swap", "add", "case"]))
    if kind == "drop":
        return word[:i] + word[i + 1:] or "x"
    if kind == "swap" and len(word) > 1:
        j = min(i + 1, len(word) - 1)
        chars = list(word)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if kind == "case":
        return word.upper()
    return word[:i] + "s" + word[i:]


def mutate(doc: Any, data: st.DataObject) -> Any:
    paths = key_paths(doc)
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    op = data.draw(st.sampled_from(["drop", "rename", "value", "number", "table"]))
    if op == "table":  # delete a whole top-level table (or array of tables)
        doc.pop(path[0], None)
    elif op == "drop":
        parent.pop(key)  # a dict key or a list index
    elif op == "rename" and isinstance(parent, dict):
        parent[typo(str(key), data)] = parent.pop(key)
    elif op == "number" and isinstance(parent[key], (int, float)):
        parent[key] = data.draw(st.sampled_from(
            [0, -1, -parent[key], parent[key] * 1000, 2**62, 1e308, -1e-300, math.nan,
             math.inf, parent[key] + 0.5]))
    else:
        parent[key] = data.draw(VALUES)
    return doc


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_suites_give_a_plan_or_one_clean_line(data: st.DataObject) -> None:
    check_mutated_suite(data)


def check_mutated_suite(data: st.DataObject) -> None:
    """Mutate PROPERTY_SUITE 1-3 times (sometimes break its syntax), then `run --dry-run`."""
    doc = json.loads(json.dumps(PROPERTY_SUITE))
    for _ in range(data.draw(st.integers(1, 3))):
        if doc:
            doc = mutate(doc, data)
    text = to_toml(doc)
    if data.draw(st.integers(0, 9)) == 0:  # sometimes break the TOML syntax itself
        cut = data.draw(st.integers(0, len(text)))
        text = text[:cut] + data.draw(st.sampled_from(["[", "=", '"', "]]", "\n=\n", ""]))
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "prop.toml"
        suite.write_text(text, encoding="utf-8")  # ASCII: json.dumps escapes the rest
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli(["run", str(suite), "--dry-run", "--results-dir", str(Path(tmp) / "r")])
        assert not (Path(tmp) / "r").exists()
    if code == 0:
        assert re.search(r"^plan: \d+ runs", out.getvalue(), re.M), out.getvalue()
        assert err.getvalue() == ""
    else:
        assert code == 2, (code, text, err.getvalue())
        lines = err.getvalue().splitlines()
        if out.getvalue():  # a valid plan, then every problem that would stop the run
            assert re.search(r"^plan: \d+ runs", out.getvalue(), re.M), out.getvalue()
            assert lines and all(line.startswith(PREFIX) for line in lines), err.getvalue()
        else:  # the suite itself is wrong: one line
            assert len(lines) == 1 and lines[0].startswith(PREFIX), (text, err.getvalue())


def _reraised_from_worker(err: Exception) -> BaseException:
    """``err`` as torch's DataLoader re-raises a worker's error in the main process."""
    from torch._utils import ExceptionWrapper

    try:
        raise err
    except Exception:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        wrapped.reraise()
    except Exception as again:
        return again
    raise AssertionError("reraise() did not raise")


def test_an_error_raised_in_a_dataloader_worker_reads_as_one_line() -> None:
    """torch re-raises a worker's error with the worker's traceback as its message; a failed
    run's reason keeps the original one line."""
    from heartbench.errors import UserError, message

    user = _reraised_from_worker(
        UserError("image /d/colors/images/train/000001.jpg cannot be decoded (OSError)"))
    assert isinstance(user, UserError)
    assert len(str(user).splitlines()) > 3  # what torch gives
    assert message(user) == "image /d/colors/images/train/000001.jpg cannot be decoded (OSError)"
    crash = _reraised_from_worker(ValueError("bad\nvalue"))
    assert isinstance(crash, ValueError)
    assert message(crash) == "bad value"  # the original message, on one line
    assert message(UserError("plain  message\n  on two lines")) == "plain message on two lines"


# ---------------------------------------------------------------------------
# bf16 asked for on a CUDA GPU that has no bfloat16 (preflight.check_device)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("executor", ["local", "debug"])
def test_bf16_on_a_gpu_without_bf16_is_one_line_exit_2_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        executor: str) -> None:
    """A GPU without bfloat16 (a V100, say) is refused before anything is submitted: the
    CUDA calls are stubbed so that this machine looks like one, CUDA or not."""
    import torch

    from heartbench.data.synth import write_synth

    data = tmp_path / "data"
    write_synth(data)
    suite = tmp_path / "suite.toml"
    suite.write_text(base('batch_size = 16=>batch_size = 16\ndevice = "cuda"\n'
                          'precision = "bf16"').format(data=data, weights="")
                     .replace('weights = ""\n', ""))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")
    results = tmp_path / "results"
    before = snapshot(tmp_path)
    code = cli(["run", str(suite), "--results-dir", str(results), "--executor", executor])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    for fragment in (str(suite), "train.precision = 'bf16'", "Tesla V100-SXM2-16GB",
                     "does not support bfloat16", "'fp32' or 'tf32'"):
        assert fragment in lines[0], (fragment, lines[0])
    assert snapshot(tmp_path) == before and not results.exists()
    # The same suite passes the check on a GPU with bfloat16, and so does fp32 without it.
    from heartbench.preflight import check_device
    from heartbench.suite import load_suite

    loaded = load_suite(suite)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    check_device(loaded, loaded.runs, executor)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    suite.write_text(suite.read_text().replace('precision = "bf16"', 'precision = "fp32"'))
    loaded = load_suite(suite)
    check_device(loaded, loaded.runs, executor)
