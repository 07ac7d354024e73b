"""`data verify`: a correct copy at the real sizes passes; each kind of damage fails by name.

The copies are written here by a small independent writer in NOAH's layout (one image
folder per list, train800val200's images byte copies of train800's and val200's), at the
manifest's real sizes for the smallest tasks: KITTI (800/200/1000/711) and Oxford-Pets
few-shot (shots x 37 lines, val 736, test 3,669).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heartbench.cli import main as cli
from heartbench.data.fingerprint import task_fingerprint
from heartbench.data.verify import (
    ALLOW_ENV,
    ImageScan,
    TaskCheck,
    check_standard_copy,
    report_duplicates,
    verify,
)
from heartbench.errors import UserError

# The paper's Table 8 and NOAH's layout, written out independently of manifest.py.
KITTI_COUNTS = {"train800": 800, "val200": 200, "test": 711}
PETS = {"classes": 37, "val": 736, "test": 3669}


def _image(uid: int) -> Image.Image:
    """A 4x4 RGB image unique to ``uid`` (so no two written images are identical)."""
    rng = np.random.default_rng(uid)
    arr = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    arr[0, 0] = [uid % 256, (uid // 256) % 256, uid // 65536]
    return Image.fromarray(arr)


def write_vtab_task(root: Path, task: str, counts: dict[str, int], classes: int) -> None:
    folder = root / task
    rng = np.random.default_rng(1)
    lines: dict[str, list[str]] = {}
    uid = 0
    for split, n in counts.items():
        (folder / "images" / split).mkdir(parents=True)
        labels = np.arange(n) % classes
        rng.shuffle(labels)
        lines[split] = []
        for i, label in enumerate(labels):
            rel = f"images/{split}/{i:06d}.png"
            _image(uid).save(folder / rel)
            uid += 1
            lines[split].append(f"{rel} {label}\n")
    # train800val200: its own folder, byte copies of train800's then val200's images.
    (folder / "images" / "train800val200").mkdir()
    both = []
    for split in ("train800", "val200"):
        for line in lines[split]:
            rel, label = line.split()
            new = f"images/train800val200/{len(both):06d}.png"
            shutil.copyfile(folder / rel, folder / new)
            both.append(f"{new} {label}\n")
    lines["train800val200"] = both
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("".join(rows))


@pytest.fixture(scope="module")
def good_vtab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vtab")
    write_vtab_task(root, "kitti", KITTI_COUNTS, 4)
    return root


@pytest.fixture()
def vtab(tmp_path: Path, good_vtab: Path) -> Path:
    """A fresh copy to damage."""
    root = tmp_path / "copy"
    shutil.copytree(good_vtab, root)
    return root


def _kitti(root: Path, deep: bool = False) -> TaskCheck:
    (check,) = verify(root, "vtab1k", ["kitti"], deep=deep)
    return check


def _edit_line(path: Path, index: int, text: str | None) -> None:
    lines = path.read_text().splitlines()
    if text is None:
        del lines[index]
    else:
        lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def assert_row_names_task_and_problem(check: TaskCheck) -> None:
    """The printed row of a failing task: its name, FAIL and every problem."""
    row = check.row()
    assert row.split()[:2] == ["kitti", "FAIL"] and all(p in row for p in check.problems), row


def test_correct_copy_passes_cheap_and_deep(good_vtab: Path) -> None:
    check = _kitti(good_vtab, deep=True)
    assert check.ok, check.problems
    assert check.counts == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 711}
    assert check.stats["modes"] == {"RGB": 2711}
    assert check.stats["size_min"] == check.stats["size_max"] == [4, 4]
    assert check.stats["train_test_duplicates"] == 0
    assert check.fingerprint == task_fingerprint(good_vtab, "vtab1k", "kitti")
    assert check.row().split()[:2] == ["kitti", "ok"]


def test_wrong_count_fails(vtab: Path) -> None:
    _edit_line(vtab / "kitti" / "test.txt", -1, None)
    check = _kitti(vtab)
    assert check.problems == ["test: 710 lines, expected 711"]
    assert_row_names_task_and_problem(check)


def test_label_out_of_range_fails(vtab: Path) -> None:
    _edit_line(vtab / "kitti" / "test.txt", 5, "images/test/000005.png 4")
    check = _kitti(vtab)
    assert len(check.problems) == 1
    assert "test.txt: 1 labels outside [0, 4) (first: line 6: 4)" in check.problems[0]
    assert_row_names_task_and_problem(check)


def test_missing_image_fails(vtab: Path) -> None:
    (vtab / "kitti" / "images" / "test" / "000007.png").unlink()
    check = _kitti(vtab)
    assert check.problems == ["test: 1 listed images missing (first: images/test/000007.png)"]
    assert_row_names_task_and_problem(check)


def test_union_mismatch_fails(vtab: Path) -> None:
    path = vtab / "kitti" / "train800val200.txt"
    rel, label = path.read_text().splitlines()[3].split()
    _edit_line(path, 3, f"{rel} {(int(label) + 1) % 4}")  # a valid label, but not val200's
    check = _kitti(vtab)
    assert len(check.problems) == 1 and "train800val200 is not train800 + val200" in \
        check.problems[0]
    assert_row_names_task_and_problem(check)


def test_train_test_duplicate_fails_deep_only(vtab: Path) -> None:
    folder = vtab / "kitti"
    shutil.copyfile(folder / "images" / "train800" / "000010.png",
                    folder / "images" / "test" / "000020.png")
    assert _kitti(vtab).ok  # the cheap checks cannot see it
    check = _kitti(vtab, deep=True)
    assert check.problems == ["1 test images are byte-identical to training images (first:"
                              " images/test/000020.png = images/train800/000010.png)"]
    assert_row_names_task_and_problem(check)


def test_corrupt_image_fails_deep(vtab: Path) -> None:
    path = vtab / "kitti" / "images" / "test" / "000003.png"
    path.write_bytes(path.read_bytes()[:40])
    check = _kitti(vtab, deep=True)
    assert len(check.problems) == 1
    assert check.problems[0].startswith("1 images do not decode (first: images/test/000003.png")
    assert_row_names_task_and_problem(check)


def test_missing_task_and_list(vtab: Path) -> None:
    (vtab / "kitti" / "val200.txt").unlink()
    checks = verify(vtab, "vtab1k", ["kitti", "dtd"])
    assert checks[0].problems == ["missing list file val200.txt"]
    assert checks[1].problems[0].startswith("no task folder (tried dtd")


def test_expected_duplicates_are_a_note() -> None:
    scan = ImageScan(hashes={"a": "h1", "b": "h2", "t1": "h1", "t2": "h3"})
    check = TaskCheck("dsprites_loc")
    report_duplicates(["a", "b"], ["t1", "t2"], scan, "symmetric shapes", check)
    assert check.ok and "expected (symmetric shapes)" in check.notes[0]
    strict = TaskCheck("svhn")
    report_duplicates(["a", "b"], ["t1", "t2"], scan, None, strict)
    assert strict.problems == ["1 test images are byte-identical to training images"
                               " (first: t1 = a)"]


def test_fingerprint_follows_content_not_path(tmp_path: Path, vtab: Path) -> None:
    before = task_fingerprint(vtab, "vtab1k", "kitti")
    moved = tmp_path / "elsewhere"
    vtab.rename(moved)
    assert task_fingerprint(moved, "vtab1k", "kitti") == before
    path = moved / "kitti" / "images" / "test" / "000001.png"
    _image(10**6).resize((5, 5)).save(path)  # a corrected image: other bytes, other size
    assert task_fingerprint(moved, "vtab1k", "kitti") != before


def test_cli_report_json_and_exit_codes(tmp_path: Path, vtab: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fp.json"
    assert cli(["data", "verify", str(vtab), "--tasks", "kitti", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("kitti") and " ok " in lines[0] and "800/200/1000/711" in lines[0]
    assert lines[-1].startswith(f"vtab1k at {vtab}: all 1 tasks match the manifest")
    payload = json.loads(out.read_text())
    assert payload["ok"] and payload["tasks"]["kitti"]["fingerprint"] == \
        task_fingerprint(vtab, "vtab1k", "kitti")
    # Default place: beside the data, and only for a matching copy (a failed check writes
    # nothing into the data folder).
    default = vtab / "heartbench-verify.json"
    before = default.read_bytes() if default.exists() else None
    _edit_line(vtab / "kitti" / "test.txt", 0, None)
    assert cli(["data", "verify", str(vtab), "--tasks", "kitti,dtd"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("kitti") and "test: 710 lines, expected 711" in lines[0]
    assert lines[1].startswith("dtd") and "no task folder" in lines[1]
    assert "2 of 2 tasks do not match the manifest: kitti, dtd" in lines[-1]
    assert f"nothing written into {vtab}" in lines[-1]
    assert (default.read_bytes() if default.exists() else None) == before


def test_cli_twin_benchmark_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["data", "verify", str(tmp_path), "--benchmark", "vtab_mini"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "invalid choice: 'vtab_mini'" in err[0]


def test_run_preflight_rejects_nonstandard_copy(vtab: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    _edit_line(vtab / "kitti" / "test.txt", 0, None)
    with pytest.raises(UserError) as err:
        check_standard_copy(vtab, "vtab1k", ["kitti"])
    msg = str(err.value)
    assert "\n" not in msg and "kitti: test: 710 lines, expected 711" in msg
    assert "data verify" in msg
    assert check_standard_copy(vtab, "synth", ["colors"]) is None  # twins have their own sizes
    monkeypatch.setenv(ALLOW_ENV, "1")
    assert "710 lines" in check_standard_copy(vtab, "vtab1k", ["kitti"])


RUN_SUITE = """
[suite]
name = "std"
benchmark = "vtab1k"
data_root = "{data}"
tasks = ["kitti"]
seeds = [0]

[backbone]
name = "vit_test"

[train]
epochs = 1
warmup_epochs = 0

[[methods]]
name = "lora"
config = {{ rank = 2 }}
"""


def test_run_says_so_before_submitting(tmp_path: Path, vtab: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _edit_line(vtab / "kitti" / "train800.txt", 0, None)
    suite = tmp_path / "std.toml"
    suite.write_text(RUN_SUITE.format(data=vtab))
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--results-dir", str(results), "--executor", "debug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kitti: train800: 799 lines, expected 800" in err[0]
    assert not results.exists()


def test_run_verify_deep_refuses_a_train_test_duplicate(tmp_path: Path, vtab: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """The cheap pre-flight cannot see a test image that is a training image; --verify-deep
    does, before anything runs (the plain --dry-run plan is unaffected)."""
    folder = vtab / "kitti"
    shutil.copyfile(folder / "images" / "train800" / "000010.png",
                    folder / "images" / "test" / "000020.png")
    suite = tmp_path / "std.toml"
    suite.write_text(RUN_SUITE.format(data=vtab))
    results = tmp_path / "results"
    assert cli(["run", str(suite), "--results-dir", str(results), "--executor", "debug",
                "--verify-deep"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kitti: 1 test images are byte-identical to training images" \
        in err[0], err
    assert not results.exists()


# --- few-shot ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_fewshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """oxford-pets in NOAH's annotation layout at the real sizes (images shared by lists)."""
    root = tmp_path_factory.mktemp("fewshot")
    folder = root / "oxford-pets"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    classes = PETS["classes"]
    uid = 10**5

    def make(prefix: str, n: int) -> list[str]:
        nonlocal uid
        rows = []
        for i in range(n):
            name = f"{prefix}_{i}.png"
            _image(uid).save(folder / "images" / name)
            uid += 1
            rows.append(f"{name} {i % classes}")
        return rows

    pool = make("train", 16 * classes)
    for k in (1, 2, 4, 8, 16):
        for s in (0, 1, 2):
            rows = pool[s:] + pool[:s]
            (folder / "annotations" / f"train_meta.list.num_shot_{k}.seed_{s}").write_text(
                "\n".join(rows[: k * classes]) + "\n")
    for split in ("val", "test"):
        (folder / "annotations" / f"{split}_meta.list").write_text(
            "\n".join(make(split, PETS[split])) + "\n")
    return root


def test_fewshot_copy_passes_and_fails_by_name(tmp_path: Path, good_fewshot: Path) -> None:
    (check,) = verify(good_fewshot, "fewshot", ["pets"], deep=True)
    assert check.ok, check.problems
    assert check.counts["val"] == 736 and check.counts["test"] == 3669
    assert check.counts["train_16shot_seed0"] == 16 * 37
    root = tmp_path / "copy"
    shutil.copytree(good_fewshot, root)
    notes = root / "oxford-pets" / "annotations"
    _edit_line(notes / "train_meta.list.num_shot_8.seed_2", 0, None)
    test_first = (notes / "test_meta.list").read_text().splitlines()[0]
    _edit_line(notes / "train_meta.list.num_shot_1.seed_1", 0, test_first)
    (check,) = verify(root, "fewshot", ["oxford-pets"])
    assert check.problems == ["train_8shot_seed2: 295 lines, expected 296",
                              "1 test images are listed in training lists (first: test_0.png)"]
