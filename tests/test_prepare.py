"""`data prepare`: manifest, label functions, slicing, writer and TFDS traps, all offline.

No test downloads anything: examples are generated TFDS-like dicts, and the TFDS glue is
driven by a stand-in module.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heartbench.cli import main as cli
from heartbench.data import prepare as prep
from heartbench.data.manifest import FEWSHOT, VTAB1K
from heartbench.data.tasks import get_benchmark
from heartbench.data.verify import verify
from heartbench.errors import UserError

# The paper's Table 8 (test column and #Classes), typed in from the paper.
TABLE8 = {
    "cifar": (100, 10000), "caltech101": (102, 6084), "dtd": (47, 1880),
    "oxford_flowers102": (102, 6149), "oxford_iiit_pet": (37, 3669), "svhn": (10, 26032),
    "sun397": (397, 21750), "patch_camelyon": (2, 32768), "eurosat": (10, 5400),
    "resisc45": (45, 6300), "diabetic_retinopathy": (5, 42670), "clevr_count": (8, 15000),
    "clevr_dist": (6, 15000), "dmlab": (6, 22735), "kitti": (4, 711),
    "dsprites_loc": (16, 73728), "dsprites_ori": (16, 73728), "smallnorb_azi": (18, 12150),
    "smallnorb_ele": (18, 12150),
}
TABLE8_FEWSHOT = {"food-101": (101, 20200, 30300), "stanford-cars": (196, 1635, 8041),
                  "oxford-flowers102": (102, 1633, 2463), "fgvc-aircraft": (100, 3333, 3333),
                  "oxford-pets": (37, 736, 3669)}


# --- the manifest against Table 8 and task_adaptation's slicing ---------------------------


def test_manifest_covers_the_19_tasks_and_table8() -> None:
    assert list(VTAB1K) == list(get_benchmark("vtab1k"))
    for name, (classes, test) in TABLE8.items():
        task = VTAB1K[name]
        # smallNORB has 9 elevations: Table 8's 18 for elevation is a typo (tasks.py).
        assert task.num_classes == (9 if name == "smallnorb_ele" else classes), name
        assert task.num_classes == get_benchmark("vtab1k")[name].num_classes
        assert task.test == test, name


@pytest.mark.parametrize("name", list(TABLE8))
def test_split_strings_give_table8_sizes_and_do_not_overlap(name: str) -> None:
    task = VTAB1K[name]
    sizes = {k: prep.split_count(task.splits[k], task.tfds_sizes) for k in task.splits}
    assert sizes == {"train800": 800, "val200": 200, "train800val200": 1000,
                     "test": TABLE8[name][1]}
    # train800, val200 and test are disjoint ranges of the TFDS splits they come from.
    ranges = [r for k in ("train800", "val200", "test")
              for r in prep.parse_split(task.splits[k], task.tfds_sizes)]
    for i, (split_a, a0, a1) in enumerate(ranges):
        for split_b, b0, b1 in ranges[i + 1:]:
            assert split_a != split_b or a1 <= b0 or b1 <= a0, (name, ranges)
    # train800val200 is train800 followed by val200.
    assert prep.parse_split(task.splits["train800val200"], task.tfds_sizes) == \
        prep.parse_split(task.splits["train800"], task.tfds_sizes) + \
        prep.parse_split(task.splits["val200"], task.tfds_sizes)


def test_parse_split_forms() -> None:
    sizes = {"train": 1000, "test": 24300, "validation": 50}
    assert prep.parse_split("train", sizes) == [("train", 0, 1000)]
    assert prep.parse_split("train[:800]+validation[:200]", sizes) == [
        ("train", 0, 800), ("validation", 0, 50)]  # TFDS clips a slice at the split's end
    assert prep.parse_split("test[50%:]", sizes) == [("test", 12150, 24300)]
    assert prep.parse_split("train[900:]", sizes) == [("train", 900, 1000)]
    assert prep.parse_split("train[-10:]", sizes) == [("train", 990, 1000)]
    with pytest.raises(ValueError, match="cannot read split"):
        prep.parse_split("extra[:5]", sizes)


def test_fewshot_manifest_matches_table8() -> None:
    assert set(FEWSHOT) == set(TABLE8_FEWSHOT) == set(get_benchmark("fewshot"))
    for name, (classes, val, test) in TABLE8_FEWSHOT.items():
        d = FEWSHOT[name]
        assert (d.num_classes, d.val, d.test) == (classes, val, test)
        assert d.counts()["train_16shot"] == 16 * classes


# --- label functions against direct computations ---------------------------------------------


def _objects(rng: np.random.Generator, n: int) -> dict:
    return {"size": rng.integers(0, 2, n), "pixel_coords": rng.uniform(5, 14, (n, 3)),
            "type": rng.integers(0, 8, n), "location": rng.uniform(-10, 60, (n, 3))}


def test_clevr_labels() -> None:
    rng = np.random.default_rng(0)
    thresholds = [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0]
    seen = set()
    for _ in range(400):
        n = int(rng.integers(3, 11))
        ex = {"objects": _objects(rng, n)}
        assert prep.label_of(VTAB1K["clevr_count"], ex) == n - 3
        depth = min(float(c[2]) for c in ex["objects"]["pixel_coords"])
        expected = sum(t < depth for t in thresholds) - 1  # bins (0,8], (8,8.5], ...
        label = prep.label_of(VTAB1K["clevr_dist"], ex)
        assert label == expected
        seen.add(label)
    assert seen == set(range(6))


def test_kitti_closest_vehicle_distance() -> None:
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(400):
        ex = {"objects": _objects(rng, int(rng.integers(1, 5)))}
        zs = [float(loc[2]) for t, loc in zip(ex["objects"]["type"], ex["objects"]["location"])
              if t in (0, 1, 2)]  # Car, Van, Truck
        d = min(zs, default=1000.0)
        expected = 0 if d <= 8 else 1 if d <= 20 else 2 if d <= 999 else 3
        label = prep.label_of(VTAB1K["kitti"], ex)
        assert label == expected
        seen.add(label)
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("name,attribute,values", [
    ("dsprites_loc", "label_x_position", 32), ("dsprites_ori", "label_orientation", 40)])
def test_dsprites_groups_neighbouring_values_into_16(name: str, attribute: str, values: int
                                                     ) -> None:
    labels = [prep.label_of(VTAB1K[name], {attribute: v}) for v in range(values)]
    assert labels == [v * 16 // values for v in range(values)]
    assert set(labels) == set(range(16))


def test_smallnorb_and_images() -> None:
    ex = {"label_azimuth": 17, "label_elevation": 8, "image": np.full((6, 6, 1), 7, np.uint8)}
    assert prep.label_of(VTAB1K["smallnorb_azi"], ex) == 17
    assert prep.label_of(VTAB1K["smallnorb_ele"], ex) == 8
    img = prep.image_of(VTAB1K["smallnorb_azi"], ex)
    assert img.shape == (6, 6, 3) and (img == 7).all()
    bits = np.zeros((4, 4, 1), np.uint8)
    bits[1, 2] = 1
    img = prep.image_of(VTAB1K["dsprites_loc"], {"image": bits})
    assert img.shape == (4, 4, 3) and img[1, 2].tolist() == [255] * 3 and img.sum() == 3 * 255


# --- the writer, end to end through verify ---------------------------------------------------


def _kitti_example(split: str, i: int) -> dict:
    rng = np.random.default_rng([zlib.crc32(split.encode()), i])
    img = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img[0, 0] = [i % 256, i // 256, len(split)]  # unique per example
    return {"image": img, "objects": _objects(rng, int(rng.integers(1, 4)))}


def test_writer_builds_a_copy_verify_accepts(tmp_path: Path) -> None:
    task = VTAB1K["kitti"]
    source = prep.fake_source(task.tfds_sizes, _kitti_example)
    counts = prep.prepare_task(tmp_path, task, source, fmt="png")
    assert counts == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 711}
    folder = tmp_path / "kitti"
    # Lines and pixels: list order is TFDS order; PNG keeps pixels exactly.
    order = {"train800": [("train", i) for i in range(800)],
             "val200": [("validation", i) for i in range(200)],
             "test": [("test", i) for i in range(711)]}
    order["train800val200"] = order["train800"] + order["val200"]
    for name, examples in order.items():
        lines = (folder / f"{name}.txt").read_text().splitlines()
        assert len(lines) == len(examples)
        for j in (0, len(lines) // 2, len(lines) - 1):
            rel, label = lines[j].split()
            assert rel == f"images/{name}/{j:06d}.png"
            ex = _kitti_example(*examples[j])
            assert int(label) == prep.label_of(task, ex)
            assert (np.asarray(Image.open(folder / rel)) == ex["image"]).all()
    (check,) = verify(tmp_path, "vtab1k", ["kitti"], deep=True)
    assert check.ok, check.problems
    prep.write_record(tmp_path, {"kitti": prep.task_entry(task, counts, "3.2.0", "fake", "png")},
                      "png")
    record = (tmp_path / prep.RECORD_FILE).read_text()
    assert '"train800val200": "train[:800]+validation[:200]"' in record
    assert '"image_format": "png"' in record


def test_writer_jpeg_is_rgb_and_close(tmp_path: Path) -> None:
    base = VTAB1K["smallnorb_ele"]
    small = dataclasses.replace(base, tfds_sizes={"train": 20, "test": 20}, splits={
        "train800": "train[:8]", "val200": "test[:2]", "train800val200": "train[:8]+test[:2]",
        "test": "test[50%:]"})
    rng = np.random.default_rng(3)
    images = {(s, i): rng.integers(0, 256, (16, 16, 1), dtype=np.uint8) // 32 * 32
              for s in ("train", "test") for i in range(20)}
    source = prep.fake_source(small.tfds_sizes, lambda s, i: {
        "image": images[s, i], "label_elevation": i % 9})
    assert prep.prepare_task(tmp_path, small, source)["test"] == 10
    rel, label = (tmp_path / "smallnorb_ele" / "test.txt").read_text().splitlines()[0].split()
    assert rel.endswith(".jpg") and label == str(10 % 9)
    with Image.open(tmp_path / "smallnorb_ele" / rel) as img:
        assert img.format == "JPEG" and img.mode == "RGB"
        diff = np.abs(np.asarray(img, float) - images["test", 10].astype(float))
        assert diff.mean() < 12  # lossy, but the same picture in all three channels
    with pytest.raises(UserError, match="'bmp' is not supported"):
        prep.prepare_task(tmp_path, small, source, fmt="bmp")


# --- TFDS traps and glue ----------------------------------------------------------------------


def test_manual_downloads_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        prep.check_manual(VTAB1K["diabetic_retinopathy"], tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "train.zip.005" in msg and "Kaggle" in msg
    assert str(tmp_path / "diabetic_retinopathy_detection") in msg
    with pytest.raises(UserError, match=r"resisc45.*tensorflow/datasets#5108"):
        prep.check_manual(VTAB1K["resisc45"], tmp_path)
    (tmp_path / "resisc45").mkdir()
    (tmp_path / "resisc45" / "NWPU-RESISC45.rar").write_bytes(b"x")
    assert prep.check_manual(VTAB1K["resisc45"], tmp_path) == tmp_path / "resisc45"
    assert prep.check_manual(VTAB1K["cifar"], tmp_path) is None


def test_trap_messages() -> None:
    err = RuntimeError("Image /t/track/outdoor/sun_aophkoiosslinihb.jpg could not be\ndecoded")
    msg = prep.trap_message(VTAB1K["sun397"], err, "building sun397/tfds:4.*.*")
    assert "\n" not in msg and "tensorflow/datasets#2889" in msg
    msg = prep.trap_message(VTAB1K["kitti"], ValueError("no version 3.2.0"), "building")
    assert "3.2.0" in msg and "task_adaptation#18" in msg
    msg = prep.trap_message(VTAB1K["cifar"], OSError("disk full"), "building cifar100")
    assert msg == "cifar: building cifar100 failed (OSError: disk full)"
    with pytest.raises(UserError, match=r"cifar: TFDS cifar100:3.0.3 has split sizes train 49000"
                                        r" \(expected 50000\)"):
        prep.check_sizes(VTAB1K["cifar"], {"train": 49000, "test": 10000}, "3.0.3")
    with pytest.raises(UserError, match=r"dmlab: TFDS dmlab:2.0.1 gives lists of test 22000"
                                        r" \(expected 22735\)"):
        prep.check_sizes(VTAB1K["dmlab"], {"train": 1000, "validation": 300, "test": 22000},
                         "2.0.1")
    with pytest.raises(UserError, match=r"gives lists of val200 None \(expected 200\), train800val200 None"):  # no validation split
        prep.check_sizes(VTAB1K["dmlab"], {"train": 1000, "test": 22735}, "2.0.1")
    # Only sizes that place a boundary or a list length matter: dmlab's train size does not.
    prep.check_sizes(VTAB1K["dmlab"], {"train": 1000, "validation": 300, "test": 22735}, "2.0.1")
    prep.check_sizes(VTAB1K["smallnorb_ele"], {"train": 24300, "test": 24300}, "2.0.0")
    with pytest.raises(UserError, match="test 24000"):
        prep.check_sizes(VTAB1K["smallnorb_ele"], {"train": 24300, "test": 24000}, "2.0.0")


class _Split:
    def __init__(self, n: int) -> None:
        self.num_examples = n


def _fake_tfds(fail: Exception | None = None) -> types.ModuleType:
    """Enough of tensorflow_datasets for prepare's glue: builder, as_dataset, as_numpy."""
    mod = types.ModuleType("tensorflow_datasets")
    mod.__version__ = "0.fake"
    calls: list[str] = []

    class Builder:
        def __init__(self, name: str, data_dir: str) -> None:
            calls.append(name)
            task = VTAB1K["kitti"]
            self.info = types.SimpleNamespace(
                version="3.2.0", splits={k: _Split(v) for k, v in task.tfds_sizes.items()})

        def download_and_prepare(self, download_config: object) -> None:
            if fail:
                raise fail

        def as_dataset(self, split: str, shuffle_files: bool) -> list:
            assert shuffle_files is False
            return list(prep.fake_source(VTAB1K["kitti"].tfds_sizes, _kitti_example)(split))

    mod.builder = Builder
    mod.download = types.SimpleNamespace(DownloadConfig=lambda **kw: kw)
    mod.as_numpy = lambda ds: ds
    mod.calls = calls
    return mod


def test_prepare_through_tfds_glue_then_cli_verify(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_tfds()
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    assert cli(["data", "prepare", "vtab1k", "--out", str(tmp_path / "v"), "--tasks", "kitti",
                "--format", "png"]) == 0
    assert fake.calls == ["kitti:3.2.0"]  # kitti pinned exactly
    assert (tmp_path / "v" / "heartbench-verify.json").is_file()
    assert '"tfds_version": "3.2.0"' in (tmp_path / "v" / prep.RECORD_FILE).read_text()


def test_prepare_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets",
                        _fake_tfds(AssertionError("kitti 3.1.0 cannot be built")))
    assert cli(["data", "prepare", "vtab1k", "--out", str(tmp_path), "--tasks", "kitti"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "kitti" in err[0] and "3.2.0" in err[0]
    assert prep.version_request(VTAB1K["cifar"]) == "3.*.*"


def test_prepare_without_tfds_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    out = tmp_path / "out"
    assert cli(["data", "prepare", "vtab1k", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install 'heartbench[tfds]'" in err[0]
    assert not out.exists()
