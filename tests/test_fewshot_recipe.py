"""NOAH's few-shot recipe (Mixup/CutMix with smoothed soft targets, RandomErasing, no
ColorJitter with RandAugment) against computations written out here, the suite keys that
carry it into every few-shot record, and Stanford Cars in both of its real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from heartbench.data.fewshot import FewShotDataset
from heartbench.data.tasks import resolve_task
from heartbench.data.transforms import batch_recipe, fewshot_train_transform
from heartbench.suite import FEWSHOT_RECIPE, load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"


def smoothed(labels: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / classes
    return F.one_hot(labels, classes).float() * (1 - smoothing) + off


@pytest.mark.parametrize("seed", range(6))
def test_mixup_or_cutmix_with_smoothed_targets(seed):
    classes, n = 7, 6
    mixer, loss = batch_recipe(FEWSHOT_RECIPE, classes)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    np.random.seed(seed)
    mixed, targets = mixer(x.clone(), y)
    # Targets: lam * smooth(y) + (1 - lam) * smooth(flip(y)), one lam for the batch.
    a, b = smoothed(y, classes, 0.1), smoothed(y.flip(0), classes, 0.1)
    diff = a - b
    i = int(torch.argmax(diff.abs().sum(1)))
    lam = float(((targets[i] - b[i]) @ diff[i]) / (diff[i] @ diff[i]))
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(targets, lam * a + (1 - lam) * b)
    mix = lam * x + (1 - lam) * x.flip(0)
    if not torch.allclose(mixed, mix, atol=1e-6):
        # CutMix: one box of every image comes from the flipped batch; lam = kept area.
        from_flip = (mixed == x.flip(0)).all(0).all(0) & ~(mixed == x).all(0).all(0)
        kept = (mixed == x).all(0).all(0)
        assert (from_flip | kept).all()
        rows, cols = torch.nonzero(from_flip, as_tuple=True)
        if len(rows):
            box = from_flip[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all()  # a rectangle
        assert lam == pytest.approx(1 - from_flip.float().mean().item(), abs=1e-6)
    # SoftTargetCrossEntropy: mean over the batch of -sum(t * log_softmax).
    logits = torch.randn(n, classes, generator=gen)
    expected = -(targets * F.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(loss(logits, targets), expected)


def test_both_mixup_and_cutmix_occur_and_odd_batches_lose_one_sample():
    mixer, _ = batch_recipe(FEWSHOT_RECIPE, 5)
    x, y = torch.rand(5, 3, 8, 8), torch.arange(5)
    kinds = set()
    np.random.seed(0)
    for _ in range(40):
        mixed, targets = mixer(x.clone(), y)
        assert mixed.shape[0] == targets.shape[0] == 4
        blended = not (torch.isclose(mixed, x[:4]) | torch.isclose(mixed, x[:4].flip(0))).all()
        kinds.add("mixup" if blended else "cutmix")
    assert kinds == {"mixup", "cutmix"}  # switch prob 0.5


def test_vtab_keeps_plain_cross_entropy_and_smoothing_alone_smooths():
    mixer, loss = batch_recipe({}, 5)
    assert mixer is None and type(loss) is torch.nn.CrossEntropyLoss
    mixer, loss = batch_recipe({"label_smoothing": 0.1}, 5)
    logits, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    expected = -(smoothed(y, 5, 0.1) * F.log_softmax(logits, -1)).sum(-1).mean()
    assert mixer is None
    torch.testing.assert_close(loss(logits, y), expected)


def test_train_transform_erases_and_has_no_color_jitter():
    tf = fewshot_train_transform(32)
    names = [type(t).__name__ for t in tf.transforms]
    assert "ColorJitter" not in names and names[-1] == "RandomErasing"
    erase = tf.transforms[-1]
    assert (erase.probability, erase.max_count) == (0.25, 1)
    assert erase.mode == "pixel" or getattr(erase, "per_pixel", False)


def test_few_shot_records_carry_the_recipe_and_vtab_runs_do_not():
    fewshot = load_suite(SUITES / "fewshot.toml")
    assert fewshot.runs and all({k: r.train[k] for k in FEWSHOT_RECIPE} == {
        "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1, "reprob": 0.25,
        "color_jitter": 0.0} for r in fewshot.runs)
    vtab = load_suite(SUITES / "vtab1k.toml")
    assert not any(k in r.train for r in vtab.runs for k in FEWSHOT_RECIPE)


# ---------------------------------------------------------------------------
# Stanford Cars: NOAH's 'standford-cars' folder and paths under the dataset folder
# ---------------------------------------------------------------------------
def write_cars(root: Path, folder: str, under_images: bool) -> None:
    base = root / folder
    images = base / "images" if under_images else base
    (base / "annotations").mkdir(parents=True)
    for split, names in (("cars_train", ["02766.jpg", "00001.jpg"]),
                         ("cars_test", ["00010.jpg"])):
        (images / split).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (6, 6), (1, 2, 3)).save(images / split / name)
    (base / "annotations" / "train_meta.list.num_shot_1.seed_0").write_text(
        "cars_train/02766.jpg 13\ncars_train/00001.jpg 195\n")
    (base / "annotations" / "test_meta.list").write_text("cars_test/00010.jpg 0\n")


@pytest.mark.parametrize("folder, under_images", [
    ("standford-cars", False),   # NOAH's repository
    ("stanford_cars", False),    # CoOp's
    ("stanford-cars", True),     # images/cars_train/
])
def test_stanford_cars_layouts(tmp_path, folder, under_images):
    write_cars(tmp_path, folder, under_images)
    info = resolve_task("fewshot", "stanford-cars")
    train = FewShotDataset(tmp_path, info, "train", shots=1, seed=0)
    images = tmp_path / folder / ("images" if under_images else "")
    assert train.samples == [(images / "cars_train" / "02766.jpg", 13),
                             (images / "cars_train" / "00001.jpg", 195)]
    assert all(path.is_file() for path, _ in train.samples)
    test = FewShotDataset(tmp_path, info, "test")
    assert test.samples == [(images / "cars_test" / "00010.jpg", 0)]


def test_a_few_shot_run_trains_with_the_recipe_and_records_it(tmp_path):
    from heartbench.train import execute

    write_cars(tmp_path / "data", "standford-cars", False)
    suite = tmp_path / "s.toml"
    suite.write_text(f"""
[suite]
benchmark = "fewshot"
data_root = "{tmp_path / 'data'}"
tasks = ["stanford-cars"]
seeds = [0]
shots = [1]
[backbone]
name = "vit_test"
[train]
epochs = 1
warmup_epochs = 0
batch_size = 3
device = "cpu"
[[methods]]
name = "linear"
""")
    (spec,) = load_suite(suite).runs
    record = execute(spec, tmp_path / "results")
    assert record["status"] == "done"
    assert {k: record["train"][k] for k in FEWSHOT_RECIPE} == FEWSHOT_RECIPE
    assert np.isfinite(record["metrics"]["history"][0]["loss"])
