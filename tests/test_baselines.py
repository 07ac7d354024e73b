"""The paper's numbers in baselines/: complete, as printed, and self-consistent."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from heartbench.report import reference as ref

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "baselines"
PAPER = ROOT.parent / "shared" / "paper" / "heart-lora-paper.md"

TABLE1_ROWS = [
    "Full", "Linear", "VPT-Deep", "NOAH†", "FourierFT", "MoRA", "LoRA", "SSF", "Adapter-P",
    "AdaptFormer", "BitFit", "FacT-TT", "VPT-Shallow", "Compacter", "Bi-LoRA", "Heart-LoRA",
]


def rows(name: str) -> list[dict[str, str]]:
    with (BASELINES / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_table1_has_every_method_and_task_column():
    table = rows("table1_vtab1k.csv")
    assert [r["method"] for r in table] == TABLE1_ROWS
    header = list(table[0])
    assert header[:3] == ["method", "size_mb", "avg"]
    assert header[3:22] == list(ref.VTAB_TASKS)
    assert all(r["source"].startswith("Table 1") for r in table)
    noah = next(r for r in table if r["key"] == "noah")
    assert "†" in noah["printed"] and "standardized" in noah["note"]
    # Numbers stay as printed (trailing zeros included).
    heart = next(r for r in table if r["key"] == "heart_lora")
    assert (heart["size_mb"], heart["avg"], heart["sun397"]) == ("0.11", "77.2", "55.9")
    assert next(r for r in table if r["key"] == "fourierft")["size_mb"] == "1.20"


@pytest.mark.parametrize("number,count", [(2, 2), (3, 3), (4, 5), (5, 4), (6, 4)])
def test_group_tables_have_their_rows(number, count):
    table = rows(ref.TABLE_FILES[number])
    assert len(table) == count
    assert all(r["source"].startswith(f"Table {number}") for r in table)
    for r in table:
        for column in ("natural", "specialized", "structured", "avg"):
            float(r[column])


def test_table4_and_table2_keep_two_decimals_as_printed():
    t4 = {r["method"]: r for r in rows("table4_swin.csv")}
    assert t4["Linear"]["avg"] == "62.60" and t4["Heart-LoRA"]["avg"] == "76.93"
    t2 = {r["method"]: r for r in rows("table2_quantization.csv")}
    assert t2["Heart-LoRA"]["specialized"] == "86.20" and t2["Heart-LoRA"]["avg"] == "77.20"
    assert t2["Heart-LoRA (FP32)"]["d_avg"] == "-0.5"


def _paper_rows(text: str, start: str, stop: str) -> dict[str, list[str]]:
    """Tab-separated rows between two markers of the paper, <b> tags dropped."""
    body = text.split(start, 1)[1].split(stop, 1)[0]
    out = {}
    for line in body.splitlines():
        cells = [re.sub(r"</?b>", "", c).strip() for c in line.split("\t")]
        if len(cells) > 3 and cells[0] and cells[1]:  # section lines have empty cells
            out[cells[0]] = cells[1:]
    return out


@pytest.mark.skipif(not PAPER.exists(), reason="the paper is not beside this checkout")
def test_every_number_matches_the_paper_text():
    text = PAPER.read_text(encoding="utf-8")
    printed = _paper_rows(text, "Specialized\t\t\t\tStructured", "Table 1.")
    table = rows("table1_vtab1k.csv")
    assert len(printed) == 16
    for r in table:
        name = r["printed"].replace("†", " <sup>†</sup>")
        expected = printed[name]
        assert [r["size_mb"], r["avg"], *[r[t] for t in ref.VTAB_TASKS]] == expected, name
    # Tables 2-6: value (and the arrow's number) per printed column.
    captions = {
        2: "Table 2. Comparison between the original",
        3: "Table 3. Results on VTAB-1K of Heart-LoRA",
        4: "Table 4. Results on VTAB-1K using Swin-B",
        5: "Table 5. Results on VTAB-1K of Heart-LoRA",
        6: "Table 6. Comparison between using arbitrary",
    }
    for number, caption in captions.items():
        # Each table's rows lie between the previous table's caption and its own.
        start = captions.get(number - 1, "Table 1.")
        assert text.count(caption) == 1 and text.count(start) == 1
        paper = _paper_rows(text, start, caption)
        paper = {k: v for k, v in paper.items() if k != "Method"}
        order = ("natural", "specialized", "structured", "avg") if number == 2 else (
            "avg", "natural", "specialized", "structured")
        csv_rows = rows(ref.TABLE_FILES[number])
        assert len(paper) == len(csv_rows), number
        for r in csv_rows:
            cells = paper[r["printed"].replace("†", " <sup>†</sup>")]
            for column, cell in zip(order, cells, strict=True):
                match = re.match(r"([\d.]+)(?:\s*\(\s*(↑|↓|\$\\downarrow\$)\s*([\d.]+)\))?", cell)
                assert match, cell
                assert r[column] == match.group(1), (number, r["method"], column)
                if match.group(2):
                    sign = "-" if "down" in match.group(2) or match.group(2) == "↓" else "+"
                    assert r[f"d_{column}"] == sign + match.group(3), (number, r["method"], column)
                else:
                    assert r[f"d_{column}"] == "", (number, r["method"], column)


def test_table1_averages_recomputed_independently():
    table = rows("table1_vtab1k.csv")
    for r in table:
        values = np.array([float(r[t]) for t in ref.VTAB_TASKS])
        paper_avg = np.mean([values[:7].mean(), values[7:11].mean(), values[11:].mean()])
        assert abs(paper_avg - float(r["avg"])) <= 0.1 + 1e-9, r["method"]
        # ... and the plain 19-task mean is a different number (the paper's is not it).
        assert abs(values.mean() - float(r["avg"])) > 0.5, r["method"]


def test_shipped_numbers_are_consistent_with_documented_notes():
    findings = ref.check_consistency(ref.load_reported(BASELINES))
    assert [f for f in findings if f.level == "fail"] == []
    checks = {(f.table, f.check) for f in findings}
    assert {(1, "avg"), (2, "avg"), (3, "delta"), (4, "delta"), (6, "cross"), (2, "cross")} <= checks
    notes = {(f.table, f.method, f.column) for f in findings if f.level == "note"}
    assert (1, "Full", "avg") in notes and (1, "Linear", "avg") in notes
    assert (2, "Heart-LoRA", "specialized") in notes and (6, "Heart-LoRA", "natural") in notes
    assert len([f for f in findings if f.table == 1 and f.check == "avg"]) == 16


def _mutated(tmp_path: Path, name: str, method: str, column: str, value: str) -> Path:
    copy = tmp_path / "baselines"
    shutil.copytree(BASELINES, copy)
    path = copy / name
    with path.open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    header = list(table[0])
    hits = [r for r in table if r["method"] == method]
    assert len(hits) == 1
    hits[0][column] = value
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    return copy


@pytest.mark.parametrize("name,method,column,value,check", [
    ("table1_vtab1k.csv", "LoRA", "cifar", "75.0", "avg"),      # task cell: Avg. no longer fits
    ("table1_vtab1k.csv", "SSF", "avg", "75.9", "avg"),         # the Avg. cell itself
    ("table3_per_layer.csv", "Heart-LoRA†", "natural", "82.7", "avg"),
    ("table4_swin.csv", "Heart-LoRA", "d_avg", "+0.5", "delta"),
    ("table6_front.csv", "LoRA", "specialized", "84.6", "cross"),
])
def test_a_changed_cell_fails_the_check(tmp_path, name, method, column, value, check):
    original = ref.consistency_failures(ref.load_reported(BASELINES))
    assert original == []
    copy = _mutated(tmp_path, name, method, column, value)
    failures = ref.consistency_failures(ref.load_reported(copy))
    assert any(f.check == check and f.method == method for f in failures), failures
    # The shipped files are untouched.
    assert ref.consistency_failures(ref.load_reported(BASELINES)) == []


def test_check_command_exits_1_on_a_changed_cell(tmp_path, capsys):
    from heartbench.report import check

    copy = _mutated(tmp_path, "table1_vtab1k.csv", "Bi-LoRA", "svhn", "80.2")
    results = tmp_path / "results"
    results.mkdir()
    args = _args(check, "--results-dir", str(results), "--baselines", str(copy), *SKIP)
    assert check.main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL Table 1 Bi-LoRA avg" in out and "check: FAILED" in out
    args = _args(check, "--results-dir", str(results), "--baselines", str(BASELINES), *SKIP)
    assert check.main(args) == 0


# An empty results folder has no summary, paper/ or twin record to re-run: those sections
# (and the paper's text, which these copies are not compared with) are switched off.
SKIP = ("--skip", "paper-text,summary,paper,reproduce")


def _args(module, *argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_bad_csv_value_is_a_user_error(tmp_path):
    from heartbench.errors import UserError

    copy = _mutated(tmp_path, "table5_responsiveness.csv", "Full", "avg", "n/a")
    with pytest.raises(UserError, match="table5_responsiveness.csv: line 2 column avg"):
        ref.load_reported(copy)


def _redigest(directory: Path) -> None:
    """What someone editing a CSV on purpose does: write the digests again."""
    import hashlib

    names = sorted(p.name for p in directory.glob("*.csv") if p.name != "twin_summary.csv")
    (directory / ref.CHECKSUMS_FILE).write_text("".join(
        f"{hashlib.sha256((directory / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


def test_shipped_digests_and_sizes_pass():
    assert ref.check_checksums(BASELINES) == []
    findings = ref.check_sizes(ref.load_table(1, BASELINES), ref.load_sizes(BASELINES))
    assert [f.method for f in findings if f.level != "ok"] == []
    # Every Table-1 row but NOAH (sourced from [34]) has storage arithmetic.
    assert {f.method for f in findings} == set(TABLE1_ROWS) - {"NOAH†"}


@pytest.mark.parametrize("name,method,column,value", [
    # The cells that moved undetected: no paper check covers them, the digest does.
    ("table1_vtab1k.csv", "SSF", "caltech101", "94.6"),
    ("table1_vtab1k.csv", "SSF", "resisc45", "88.5"),
    ("table5_responsiveness.csv", "Heart-LoRA† (weight)", "natural", "81.9"),
    ("table1_vtab1k.csv", "Heart-LoRA", "bold", "avg"),
])
def test_a_cell_no_paper_check_covers_fails_on_its_digest(tmp_path, name, method, column, value):
    copy = _mutated(tmp_path, name, method, column, value)
    assert ref.consistency_failures(ref.load_reported(copy)) == []  # the paper can't tell
    problems = ref.check_checksums(copy)
    assert len(problems) == 1 and name in problems[0]


@pytest.mark.parametrize("method,value", [("Heart-LoRA", "0.41"), ("LoRA", "1.31"),
                                          ("Bi-LoRA", "0.12"), ("VPT-Shallow", "0.70"),
                                          ("MoRA", "1.30")])
def test_a_changed_size_fails_the_storage_arithmetic(tmp_path, method, value):
    copy = _mutated(tmp_path, "table1_vtab1k.csv", method, "size_mb", value)
    _redigest(copy)  # even with the digest updated, the arithmetic disagrees
    assert ref.check_checksums(copy) == []
    failed = [f for f in ref.check_sizes(ref.load_table(1, copy), ref.load_sizes(copy))
              if f.level == "fail"]
    assert [f.method for f in failed] == [method]


def test_check_command_fails_on_size_and_digest(tmp_path, capsys):
    from heartbench.report import check

    copy = _mutated(tmp_path, "table1_vtab1k.csv", "Heart-LoRA", "size_mb", "0.41")
    (tmp_path / "results").mkdir()
    args = _args(check, "--results-dir", str(tmp_path / "results"), "--baselines", str(copy),
                 *SKIP)
    assert check.main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL Table 1 Heart-LoRA size_mb: Size vs storage arithmetic" in out
    assert "table1_vtab1k.csv changed since" in out


def test_sizes_file_is_what_the_methods_store():
    """baselines/sizes_vitb.csv against the methods themselves (torch; ViT-B on meta)."""
    pytest.importorskip("torch")
    import json

    import torch

    from heartbench.adapters import create_method
    from heartbench.backbones import build_backbone
    from heartbench.methods_cmd import _uninitialised_copy

    with torch.device("meta"):
        template = build_backbone("vit_base_patch16_224", 100)
    for row in rows("sizes_vitb.csv"):
        torch.manual_seed(0)
        backbone = _uninitialised_copy(template)
        method = create_method(row["method"], json.loads(row["config"]))
        method.attach(backbone)
        method.nominal_state()
        assert method.stored_bytes() == int(row["stored_bytes"]), row
