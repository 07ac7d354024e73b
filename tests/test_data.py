"""Task registry, transforms, VTAB / few-shot loaders and validation, synthetic data."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heartbench.data import cli as data_cli
from heartbench.data.fewshot import FewShotDataset, validate_fewshot
from heartbench.data.synth import N_TEST, N_TRAIN, N_VAL, write_synth
from heartbench.data.tasks import GROUPS, get_benchmark, is_fewshot, resolve_task
from heartbench.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    fewshot_test_size,
    fewshot_test_transform,
    fewshot_train_transform,
    vtab_transform,
)
from heartbench.data.vtab import VTABDataset, validate_vtab
from heartbench.errors import UserError

# --- registry ---------------------------------------------------------------------------

VTAB_ORDER = [
    ("cifar", 100),
    ("caltech101", 102),
    ("dtd", 47),
    ("oxford_flowers102", 102),
    ("oxford_iiit_pet", 37),
    ("svhn", 10),
    ("sun397", 397),
    ("patch_camelyon", 2),
    ("eurosat", 10),
    ("resisc45", 45),
    ("diabetic_retinopathy", 5),
    ("clevr_count", 8),
    ("clevr_dist", 6),
    ("dmlab", 6),
    ("kitti", 4),
    ("dsprites_loc", 16),
    ("dsprites_ori", 16),
    ("smallnorb_azi", 18),
    ("smallnorb_ele", 9),
]


def test_vtab1k_registry_matches_protocol():
    tasks = get_benchmark("vtab1k")
    assert [(t.name, t.num_classes) for t in tasks.values()] == VTAB_ORDER
    groups = [t.group for t in tasks.values()]
    assert groups == ["natural"] * 7 + ["specialized"] * 4 + ["structured"] * 8
    assert GROUPS == ("natural", "specialized", "structured")
    assert all(t.benchmark == "vtab1k" for t in tasks.values())


def test_fewshot_registry():
    tasks = get_benchmark("fewshot")
    assert {t.name: t.num_classes for t in tasks.values()} == {
        "fgvc-aircraft": 100,
        "food-101": 101,
        "oxford-flowers102": 102,
        "oxford-pets": 37,
        "stanford-cars": 196,
    }
    assert all(t.group is None for t in tasks.values())
    assert is_fewshot("fewshot") and is_fewshot("fewshot_mini") and not is_fewshot("vtab1k")


@pytest.mark.parametrize("bench", ["synth", "vtab_mini"])
def test_small_benchmarks_cover_every_group(bench):
    tasks = get_benchmark(bench).values()
    for g in GROUPS:
        assert sum(t.group == g for t in tasks) >= (1 if bench == "synth" else 2)
    assert all(t.note for t in tasks)


@pytest.mark.parametrize(
    "bench,alias,name",
    [
        ("vtab1k", "cifar100", "cifar"),
        ("vtab1k", "oxford_pet", "oxford_iiit_pet"),
        ("vtab1k", "pets", "oxford_iiit_pet"),
        ("vtab1k", "flowers102", "oxford_flowers102"),
        ("vtab1k", "oxford_flowers", "oxford_flowers102"),
        ("vtab1k", "camelyon", "patch_camelyon"),
        ("vtab1k", "retinopathy", "diabetic_retinopathy"),
        ("vtab1k", "CIFAR", "cifar"),
        ("fewshot", "food101", "food-101"),
        ("fewshot", "oxford_pets", "oxford-pets"),
        ("fewshot", "stanford_cars", "stanford-cars"),
        ("vtab_mini", "rotation", "orientation"),
    ],
)
def test_aliases_resolve(bench, alias, name):
    assert resolve_task(bench, alias).name == name


def test_unknown_task_and_benchmark_are_user_errors():
    with pytest.raises(UserError, match=r"unknown vtab1k task 'cifr' \(did you mean 'cifar'\?\)"):
        resolve_task("vtab1k", "cifr")
    with pytest.raises(UserError, match="did you mean 'diabetic_retinopathy'"):
        resolve_task("vtab1k", "retinopaty")  # closest to an alias -> canonical name
    with pytest.raises(UserError, match="expected one of: .*smallnorb_ele"):
        resolve_task("vtab1k", "nothing_like_it")
    with pytest.raises(UserError, match="unknown benchmark 'vtab1'"):
        get_benchmark("vtab1")


# --- synthetic data + VTAB loader ---------------------------------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synth(root, seed=0)
    return root


def _read_lines(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        rel, lab = line.split(" ")
        rows.append((rel, int(lab)))
    return rows


def test_synth_layout_and_counts(synth_root):
    expected = {
        "train800": N_TRAIN,
        "val200": N_VAL,
        "train800val200": N_TRAIN + N_VAL,
        "test": N_TEST,
    }
    for task in get_benchmark("synth"):
        lines = {s: _read_lines(synth_root / task / f"{s}.txt") for s in expected}
        assert {s: len(v) for s, v in lines.items()} == expected
        assert lines["train800"] + lines["val200"] == lines["train800val200"]
        for rel, _ in lines["test"] + lines["train800val200"]:
            assert rel.endswith(".jpg") and (synth_root / task / rel).is_file()
        with Image.open(synth_root / task / lines["test"][0][0]) as img:
            assert img.format == "JPEG" and img.size == (32, 32)


@pytest.mark.parametrize("split", ["train800", "val200", "train800val200", "test"])
def test_vtab_dataset_lengths_and_labels(synth_root, split):
    info = resolve_task("synth", "stripes")
    ds = VTABDataset(synth_root, info, split, vtab_transform(32))
    lines = _read_lines(synth_root / "stripes" / f"{split}.txt")
    assert len(ds) == len(lines)
    assert ds.targets == [lab for _, lab in lines]
    x, y = ds[3]
    assert y == lines[3][1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_decoded_cache_gives_the_same_tensors_and_sees_rewritten_files(tmp_path):
    from heartbench.data import vtab

    root = tmp_path / "synth"
    write_synth(root, seed=0)
    info = resolve_task("synth", "colors")
    vtab.clear_decoded_cache()
    plain = VTABDataset(root, info, "test", vtab_transform(32))
    cached = VTABDataset(root, info, "test", vtab_transform(32), cache=True)
    for i in range(5):
        assert torch.equal(cached[i][0], plain[i][0]) and cached[i][1] == plain[i][1]
    assert len(vtab._DECODED) == 5
    # A second dataset over the same files (the next run in the worker) hits the cache...
    again = VTABDataset(root, info, "test", vtab_transform(32), cache=True)
    assert again[0][0] is cached[0][0]
    # ...but an image rewritten on disk is decoded anew.
    path, original = cached.samples[0][0], cached[0][0]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(path, format="JPEG", quality=100)
    fresh = again[0][0]
    assert not torch.equal(fresh, original) and torch.equal(fresh, plain[0][0])
    vtab.clear_decoded_cache()


def test_vtab_transform_values(synth_root):
    info = resolve_task("synth", "colors")
    raw = VTABDataset(synth_root, info, "test", None)
    plain = VTABDataset(synth_root, info, "test", vtab_transform(32))
    norm = VTABDataset(synth_root, info, "test", vtab_transform(32, normalize=True))
    img, _ = raw[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    x, _ = plain[0]
    # Same size: the resize is the identity, so ToTensor is exactly pixels / 255.
    expected = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(x, expected, atol=1e-6)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    xn, _ = norm[0]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(xn, (x - mean) / std, atol=1e-5)
    assert not torch.allclose(xn, x)


def test_vtab_transform_squash_resize_bicubic(synth_root):
    img = Image.open(synth_root / "colors" / "images" / "test" / "000000.jpg").convert("RGB")
    x = vtab_transform(48)(img)
    ref = np.asarray(img.resize((48, 48), Image.BICUBIC), dtype=np.float32) / 255
    assert x.shape == (3, 48, 48)
    assert np.abs(x.permute(1, 2, 0).numpy() - ref).max() <= 1 / 255 + 1e-6
    wide = Image.new("RGB", (64, 16), (10, 200, 30))
    assert vtab_transform(32)(wide).shape == (3, 32, 32)  # squash, not crop


def test_greyscale_images_become_rgb(tmp_path):
    task = tmp_path / "colors"
    (task / "images").mkdir(parents=True)
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(task / "images" / "g.png")
    (task / "test.txt").write_text("images/g.png 1\n")
    ds = VTABDataset(tmp_path, resolve_task("synth", "colors"), "test", vtab_transform(16))
    x, y = ds[0]
    assert y == 1 and x.shape == (3, 16, 16)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_task_folder_under_alias_name(tmp_path, synth_root):
    src = tmp_path / "vtab"
    src.mkdir()
    # Pretend a VTAB task called cifar is stored under the alias 'cifar100'.
    shutil.copytree(synth_root / "colors", src / "cifar100")
    rows = _read_lines(src / "cifar100" / "test.txt")
    info = resolve_task("vtab1k", "cifar")
    ds = VTABDataset(src, info, "test")
    assert len(ds) == len(rows)
    validate_vtab(src, "vtab1k", ["cifar100"], ["test"])


def test_dataloader_batches(synth_root):
    ds = VTABDataset(
        synth_root, resolve_task("synth", "position"), "train800val200", vtab_transform(32)
    )
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert xb.shape == (8, 3, 32, 32) and yb.tolist() == ds.targets[:8]


# --- validation error paths ----------------------------------------------------------------


@pytest.fixture()
def broken(tmp_path, synth_root) -> Path:
    """A fresh copy of one synthetic task to break."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copytree(synth_root / "position", root / "position")
    return root


def _validate(root):
    validate_vtab(root, "synth", ["position"], ["train800val200", "test"])


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_validate_passes_on_good_data(broken):
    _validate(broken)
    validate_vtab(broken, "synth", ["position"], ["train800", "val200", "train800val200", "test"])


def test_validate_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        _validate(missing)
    msg = _one_line(err)
    assert str(missing) in msg and "train800val200.txt" in msg


def test_validate_missing_task_folder(broken):
    shutil.rmtree(broken / "position")
    with pytest.raises(UserError) as err:
        _validate(broken)
    msg = _one_line(err)
    assert str(broken / "position") in msg and "images/x.jpg <label>" in msg


def test_validate_missing_list(broken):
    (broken / "position" / "test.txt").unlink()
    with pytest.raises(UserError) as err:
        _validate(broken)
    assert str(broken / "position" / "test.txt") in _one_line(err)


def test_validate_missing_image(broken):
    rel = _read_lines(broken / "position" / "test.txt")[-1][0]
    (broken / "position" / rel).unlink()
    with pytest.raises(UserError) as err:
        _validate(broken)
    msg = _one_line(err)
    assert str(broken / "position" / rel) in msg and "does not exist" in msg


def test_validate_missing_image_folder(broken):
    shutil.rmtree(broken / "position" / "images" / "test")
    with pytest.raises(UserError) as err:
        _validate(broken)
    assert str(broken / "position" / "images" / "test") in _one_line(err)


@pytest.mark.parametrize(
    "bad_line,needle",
    [
        ("images/test/000000.jpg", "has no label"),
        ("images/test/000000.jpg 4", "outside [0, 4)"),
        ("images/test/000000.jpg -1", "outside [0, 4)"),
        ("images/test/000000.jpg two", "is not an integer"),
        ("images/test/000000.jpg 1.5", "is not an integer"),
    ],
)
def test_validate_bad_labels(broken, bad_line, needle):
    path = broken / "position" / "test.txt"
    lines = path.read_text().splitlines()
    lines[5] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        _validate(broken)
    msg = _one_line(err)
    assert str(path) in msg and "line 6" in msg and needle in msg


def test_validate_empty_list_and_bad_split(broken):
    (broken / "position" / "test.txt").write_text("")
    with pytest.raises(UserError, match="is empty"):
        _validate(broken)
    with pytest.raises(UserError, match="unknown VTAB split 'train'"):
        validate_vtab(broken, "synth", ["position"], ["train"])


# --- few-shot layout -----------------------------------------------------------------------


@pytest.fixture()
def fewshot_root(tmp_path, synth_root) -> Path:
    """A hand-made few-shot layout for a 4-class dataset, reusing synthetic JPEGs."""
    root = tmp_path / "fs"
    ds = root / "ds4"
    (ds / "annotations").mkdir(parents=True)
    (ds / "images" / "a").mkdir(parents=True)
    src = _read_lines(synth_root / "colors" / "test.txt")
    for i, (rel, _) in enumerate(src[:24]):
        shutil.copy(synth_root / "colors" / rel, ds / "images" / "a" / f"{i}.jpg")
    labels = [lab for _, lab in src[:24]]
    for k in (1, 2):
        for s in (0, 1):
            rows = [f"a/{i}.jpg {labels[i]}" for i in range(s, s + 4 * k)]
            (ds / "annotations" / f"train_meta.list.num_shot_{k}.seed_{s}").write_text(
                "\n".join(rows)
            )
    (ds / "annotations" / "val_meta.list").write_text(
        "\n".join(f"a/{i}.jpg {labels[i]}" for i in range(10, 14))
    )
    (ds / "annotations" / "test_meta.list").write_text(
        "\n".join(f"a/{i}.jpg {labels[i]}" for i in range(14, 24))
    )
    return root


@pytest.fixture()
def fewshot_info(monkeypatch):
    from heartbench.data import tasks as tasks_mod

    info = tasks_mod.TaskInfo("ds4", 4, None, ("ds_four",), "fewshot_test", "test only")
    monkeypatch.setitem(tasks_mod._BENCHMARKS, "fewshot_test", {"ds4": info})
    return info


def test_fewshot_dataset(fewshot_root, fewshot_info):
    ds = FewShotDataset(
        fewshot_root, fewshot_info, "train", shots=2, seed=1, transform=fewshot_test_transform(32)
    )
    assert len(ds) == 8
    assert ds.samples[0][0] == fewshot_root / "ds4" / "images" / "a" / "1.jpg"
    x, _ = ds[0]
    assert x.shape == (3, 32, 32)
    assert len(FewShotDataset(fewshot_root, fewshot_info, "test")) == 10
    validate_fewshot(
        fewshot_root, "fewshot_test", ["ds_four"], [1, 2], [0, 1], ["train", "val", "test"]
    )


def test_fewshot_validation_errors(fewshot_root, fewshot_info):
    with pytest.raises(UserError) as err:
        validate_fewshot(fewshot_root, "fewshot_test", ["ds4"], [4], [0])
    assert "train_meta.list.num_shot_4.seed_0" in _one_line(err)
    (fewshot_root / "ds4" / "images" / "a" / "15.jpg").unlink()
    with pytest.raises(UserError) as err:
        validate_fewshot(fewshot_root, "fewshot_test", ["ds4"], [1], [0])
    assert str(fewshot_root / "ds4" / "images" / "a" / "15.jpg") in _one_line(err)
    with pytest.raises(UserError, match="does not exist"):
        validate_fewshot(fewshot_root / "missing", "fewshot_test", ["ds4"], [1], [0])
    with pytest.raises(UserError, match="no folder for dataset 'ds4'"):
        validate_fewshot(fewshot_root / "ds4", "fewshot_test", ["ds4"], [1], [0])


def test_fewshot_transforms():
    assert fewshot_test_size(224) == 256
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    test_tf = fewshot_test_transform(32)
    x = test_tf(img)
    r = fewshot_test_size(32)
    ref = np.asarray(img.resize((r, r), Image.BICUBIC), dtype=np.float32) / 255
    off = (r - 32) // 2  # the centre crop of an even difference
    ref = ref[off : off + 32, off : off + 32]
    ref = (ref - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert x.shape == (3, 32, 32)
    assert np.abs(x.permute(1, 2, 0).numpy() - ref).max() < 0.02
    train_tf = fewshot_train_transform(32)
    names = [type(t).__name__ for t in train_tf.transforms]
    assert names == [
        "ToRGB",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandAugment",
        "ToTensor",
        "Normalize",
        "RandomErasing",
    ]
    ra = train_tf.transforms[3]
    assert ra.num_layers == 2 and all(op.magnitude == 9 for op in ra.ops)
    torch.manual_seed(0)
    grey = Image.fromarray(np.full((40, 40), 128, np.uint8))
    assert train_tf(grey).shape == (3, 32, 32)
    names = [type(t).__name__ for t in fewshot_train_transform(32, color_jitter=0.4).transforms]
    assert "ColorJitter" in names


def test_rand_augment_posterize_at_top_magnitude_gives_black_not_a_crash():
    """Magnitude noise can ask timm's PosterizeIncreasing for 0 bits, which Pillow 12+ refuses."""
    from PIL import ImageOps

    from heartbench.data.transforms import posterize_bits

    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8))
    for bits in range(1, 8):  # the same image as Pillow's own posterize wherever Pillow accepts
        assert np.array_equal(np.asarray(posterize_bits(img, bits)),
                              np.asarray(ImageOps.posterize(img, bits)))
    (op,) = [o for o in fewshot_train_transform(32).transforms[3].ops
             if o.name == "PosterizeIncreasing"]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # level 10: keep 4 - 4 = 0 bits
    assert np.asarray(op(img)).max() == 0


# --- determinism and CLI -------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_synth_is_deterministic(tmp_path, synth_root):
    write_synth(tmp_path / "again", seed=0)
    assert _digest(tmp_path / "again") == _digest(synth_root)
    write_synth(tmp_path / "other", seed=1, tasks=["stripes"])
    assert (tmp_path / "other" / "stripes" / "test.txt").read_bytes() != (
        synth_root / "stripes" / "test.txt"
    ).read_bytes()


def test_cli_synth(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    args = parser.parse_args(["synth", "--out", str(tmp_path / "s"), "--seed", "3", "--size", "24"])
    assert data_cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("synth/colors: natural 4 classes, train800=48")
    assert len(out) == 4
    with Image.open(tmp_path / "s" / "position" / "images" / "test" / "000000.jpg") as img:
        assert img.size == (24, 24)
    with pytest.raises(UserError, match="say what to write"):
        data_cli.main(parser.parse_args([]))
