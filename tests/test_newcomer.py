"""A newcomer's first hour (issue 27): `run` names every problem at once, one command
grammar, a bench verdict, `data verify` on a copy that is not VTAB-1K, "in no table" lines
that say why, and the docs site building strictly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from heartbench.cli import main as cli

REPO = Path(__file__).resolve().parent.parent
PREFIX = "heartbench run: error: "

# A suite with four problems at once: no data, no weights, a results folder under a file,
# and CUDA asked for on a machine without it (the local executor trains here).
FOUR_PROBLEMS = """
[suite]
name = "four"
benchmark = "vtab1k"
data_root = "{data}"
tasks = ["kitti", "dtd"]
seeds = [0]

[backbone]
name = "vit_test"
weights = "{weights}"

[train]
epochs = 1
warmup_epochs = 0
batch_size = 16
device = "cuda"

[launcher]
executor = "local"

[[methods]]
name = "lora"
label = "LoRA"
"""


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def four_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """The suite, and the command line whose results folder lies under a plain file."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    weights = tmp_path / "weights" / "ViT-B_16.npz"
    (tmp_path / "a-file").write_text("not a folder")
    suite = tmp_path / "four.toml"
    suite.write_text(FOUR_PROBLEMS.format(data=tmp_path / "vtab-1k", weights=weights))
    return suite, ["run", str(suite), "--results-dir", str(tmp_path / "a-file" / "results")]


@pytest.mark.parametrize("dry_run", [False, True])
def test_run_names_every_problem_of_a_suite_at_once(
        tmp_path: Path, four_problems: tuple[Path, list[str]], dry_run: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Data, weights, results folder and device: one line each with its remedy, a closing
    count, exit 2, nothing written; the same with --dry-run (after the plan)."""
    suite, args = four_problems
    before = snapshot(tmp_path)
    code = cli(args + (["--dry-run"] if dry_run else []))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (out, err)
    assert all(line.startswith(PREFIX) for line in lines), err
    expected = {  # each problem: fragments its line must hold
        "data": [str(tmp_path / "vtab-1k"), "data prepare vtab1k", "--tasks dtd,kitti"],
        "weights": [str(tmp_path / "weights" / "ViT-B_16.npz"),
                    "gs://vit_models/imagenet21k/ViT-B_16.npz", 'weights = "timm"'],
        "results": [str(tmp_path / "a-file" / "results"), "not writable"],
        "device": ["train.device = 'cuda'", "no CUDA device"],
    }
    assert len(lines) == len(expected) + 1, err
    for (what, fragments), line in zip(expected.items(), lines, strict=False):
        for fragment in fragments:
            assert fragment in line, (what, fragment, line)
    assert lines[-1].startswith(f"{PREFIX}{len(expected)} problems"), lines[-1]
    assert ("plan: 2 runs" in out) == dry_run
    assert snapshot(tmp_path) == before


def test_run_names_each_missing_and_each_broken_task(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under an existing root: the tasks without data in one line with the command that
    makes them, and a task whose list is broken in its own line."""
    from heartbench.data.rehearsal import write_fullsize

    root = tmp_path / "vtab-1k"
    write_fullsize(root, ["kitti"], size=8, max_test=None)
    listing = root / "kitti" / "test.txt"
    listing.write_text("".join(listing.read_text().splitlines(keepends=True)[:-1]))
    suite = tmp_path / "s.toml"
    suite.write_text(FOUR_PROBLEMS.replace('["kitti", "dtd"]', '["kitti", "dtd", "eurosat"]')
                     .replace('weights = "{weights}"\n', "").replace('device = "cuda"\n', "")
                     .format(data=root))
    assert cli(["run", str(suite), "--results-dir", str(tmp_path / "r")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert "2 tasks have no data under" in lines[0] and "dtd, eurosat" in lines[0]
    assert "--tasks dtd,eurosat" in lines[0]
    assert "kitti" in lines[1] and "test" in lines[1] and "expected" in lines[1]
    assert lines[2].startswith(f"{PREFIX}2 problems (data)")
    assert not (tmp_path / "r").exists()


def test_dry_run_announces_missing_twin_data_and_writes_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "synth"
    assert cli(["run", str(REPO / "suites" / "smoke.toml"), "--dry-run", "--data-root",
                str(root), "--only", "colors"]) == 0
    out = capsys.readouterr().out
    assert f"tasks colors are not in {root} yet" in out and not root.exists()
    assert out.strip().splitlines()[-1].startswith("plan: ")


def test_known_weights_say_where_they_are_published() -> None:
    """Every checkpoint a shipped suite names has a remedy naming where it comes from."""
    import tomllib

    from heartbench.preflight import KNOWN_WEIGHTS, weights_remedy

    named = set()
    for path in (REPO / "suites").glob("*.toml"):
        weights = tomllib.loads(path.read_text())["backbone"].get("weights")
        if weights not in (None, "timm"):
            named.add(Path(weights).name)
    assert named and named <= set(KNOWN_WEIGHTS), named - set(KNOWN_WEIGHTS)
    assert "storage.googleapis.com/vit_models" in weights_remedy(Path("w/ViT-B_16.npz"))


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


# --- one grammar ---------------------------------------------------------------------------

def test_data_twins_are_spelled_as_in_suites_and_old_spellings_work_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`data fewshot_mini --tasks` as suites spell it; `fewshot-mini --datasets` still writes
    the same data, with a note on stderr for each old spelling."""
    assert cli(["data", "fewshot_mini", "--out", str(tmp_path / "new"), "--tasks",
                "digits8"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "fewshot_mini/digits8" in out
    assert cli(["data", "fewshot-mini", "--out", str(tmp_path / "old"), "--datasets",
                "digits8"]) == 0
    err = capsys.readouterr().err
    assert "'fewshot-mini' is spelled 'fewshot_mini'" in err
    assert "--datasets is now spelled --tasks" in err
    new, old = (sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*"))
                for d in ("new", "old"))
    assert new == old and new


def test_every_command_spells_tasks_and_output_folders_alike(
        capsys: pytest.CaptureFixture[str]) -> None:
    """No command offers --task, --datasets or --output: tasks are --tasks, output folders
    --out (old spellings are hidden from --help)."""
    from heartbench.cli import COMMANDS, build_parser

    for command in COMMANDS:
        parser = build_parser(command)
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        for old in ("--task ", "--task,", "--datasets", "--output"):
            assert old not in text, (command, old)
    for what in ("vtab_mini", "fewshot_mini", "synth", "verify", "prepare"):
        with pytest.raises(SystemExit):
            build_parser("data").parse_args(["data", what, "--help"])
        text = capsys.readouterr().out
        assert "--tasks" in text and "--datasets" not in text, what


def test_tables_help_and_out_say_where_files_go(capsys: pytest.CaptureFixture[str]) -> None:
    from heartbench.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser("tables").parse_args(["tables", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "into paper/" not in text or "--out DIR" in text.split("into paper/")[1][:20]
    assert "--out DIR" in text


FAKE_PDFLATEX = """#!/bin/sh
# Writes what pdflatex writes: NAME.aux, NAME.log and NAME.pdf in -output-directory or here.
dir=.
for a in "$@"; do case "$a" in -output-directory=*) dir="${a#-output-directory=}";; esac; done
for ext in aux log pdf; do echo fake > "$dir/preview.$ext"; done
"""


def test_tables_out_leaves_no_aux_or_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """pdflatex's .aux and .log never land in the output folder; preview.pdf does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pdflatex").write_text(FAKE_PDFLATEX)
    (bin_dir / "pdflatex").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "p"
    assert cli(["tables", "--results-dir", str(REPO / "results"), "--out", str(out),
                "--no-figures", "--source", "reported"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "preview.pdf" in names and "preview.tex" in names
    assert not {n for n in names if n.endswith((".aux", ".log")) or n.startswith(".pdflatex")}


def test_bench_default_out_is_untracked_and_committed_needs_a_flag(tmp_path: Path) -> None:
    """bench's default --out is not the committed bench/; --update-committed is."""
    import argparse
    import subprocess

    from heartbench.bench import settings

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    args = parser.parse_args([])
    out = settings.out_folder(args.out, args.update_committed)
    tracked = subprocess.run(["git", "ls-files", "--", str(out)], cwd=REPO, capture_output=True,
                             text=True).stdout
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "quick.json")],
                             cwd=REPO).returncode == 0
    assert tracked == "" and ignored, out
    assert settings.out_folder(None, True).resolve() == (REPO / "bench").resolve()
    from heartbench.errors import UserError

    with pytest.raises(UserError, match="--update-committed"):
        settings.out_folder(tmp_path, True)


# --- bench's verdict ------------------------------------------------------------------------

def _target(key: str, value: float, bound: float) -> dict:
    return {"key": key, "what": key, "value": value, "target": f"<= {bound:g}",
            "met": value <= bound}


def test_bench_verdict_says_whether_anything_is_wrong_and_strict_exits_1() -> None:
    from heartbench.bench.verdict import exit_code, verdict

    meta = {"threads": 2, "load_avg": [0.5, 0.5, 0.5], "quick": True}
    ok = [_target("step:lora", 1.0, 1.05), _target("tables", 3.0, 10.0)]
    assert verdict(ok, meta)[0].startswith("verdict: OK")
    assert exit_code(ok, strict=True) == 0
    missed = [*ok, _target("step:bilora", 1.32, 1.05)]
    text = "\n".join(verdict(missed, meta))
    assert "1 of 3 speed/memory targets were missed" in text and "step:bilora 1.320" in text
    assert "not a wrong result" in text and "--strict" in text and "tiny model" in text
    assert exit_code(missed, strict=False) == 0 and exit_code(missed, strict=True) == 1
    busy = "\n".join(verdict(missed, {**meta, "load_avg": [7.0, 7.0, 7.0]}))
    assert "busy" in busy


def test_bench_main_prints_the_verdict_and_strict_exit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The command's end: the report, then the verdict; --strict turns a miss into exit 1
    (the measuring itself is stubbed: the committed quick report stands in)."""
    import json

    from heartbench import bench
    from heartbench.bench import run as run_module

    report = json.loads((REPO / "bench" / "quick.json").read_text())
    monkeypatch.setattr(run_module, "run", lambda settings: report)
    parser = __import__("argparse").ArgumentParser()
    bench.add_arguments(parser)
    for strict, code in ((False, 0), (True, 1)):
        args = parser.parse_args(["--quick", "--out", str(tmp_path), "--no-peft"]
                                 + (["--strict"] if strict else []))
        assert bench.main(args) == code
        out = capsys.readouterr().out
        assert "verdict: the bench ran without error" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quick.json", "quick.md"]


# --- data verify, "in no table" -------------------------------------------------------------

def test_data_verify_on_a_synth_copy_says_what_it_is_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heartbench.data.synth import write_synth

    root = tmp_path / "synth"
    write_synth(root)
    before = snapshot(root)
    assert cli(["data", "verify", str(root)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert "is not a vtab1k copy" in lines[0] and "synth" in lines[0]
    assert "data synth" in lines[0] and "colors, position, stripes" in lines[0]
    assert snapshot(root) == before


def test_in_no_table_lines_say_why_and_how_to_show_them() -> None:
    """Every 'in no table' line of the committed records says why and how to see them, and
    the query it gives finds exactly that line's records."""
    import re

    from heartbench.report import select
    from heartbench.results import load_records

    loaded = load_records(REPO / "results")
    lines = select.unplaced(loaded.done, "results")
    assert lines
    for line in lines:
        count = int(re.search(r"\((\S+), (\d+) records", line).group(2))
        assert "outside the paper's search space" in line or "no table has a row" in line
        query = re.search(r'frame\.query\("(.*?)"\)', line)
        if query:
            assert len(loaded.frame.query(query.group(1))) == count
            assert "docs/adding-a-table.md" in line
        else:
            assert "plotted in fig4_" in line



# --- the docs site ----------------------------------------------------------------------------

def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` (broken links, pages missing from the nav): skipped without
    mkdocs, except where HEARTBENCH_REQUIRE_DOCS is set (CI), which fails instead."""
    import subprocess
    import sys

    try:
        import material  # noqa: F401  (mkdocs-material: the theme)
        import mkdocs  # noqa: F401
    except ImportError as err:
        if _env_flag("HEARTBENCH_REQUIRE_DOCS"):
            pytest.fail(f"HEARTBENCH_REQUIRE_DOCS is set but mkdocs is missing ({err}):"
                        " pip install -c constraints.txt -e \".[dev]\"")
        pytest.skip(f"mkdocs is not installed ({err})")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert not (REPO / "site").exists()  # nothing written into the checkout


def test_readme_is_short_and_ci_runs_its_commands() -> None:
    """At most 300 lines; its install and test commands are the ones .ci/run runs; every
    docs page it links exists."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for command in ('pip install -c constraints.txt -e ".[dev]"', "python -m pytest\n",
                    'python -m pytest -m "slow or slurm"'):
        assert command.strip() in readme and command in ci + "\n", command
    assert "HEARTBENCH_REQUIRE_DOCS" in ci
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link
