"""Paper scale without a GPU: bounded host memory, full-size rehearsal data, faults at scale.

- The decoded-image cache keeps the training split (read every epoch) and streams the
  others, under a byte budget;
- ``data synth --full-size`` writes the real split sizes of the paper's Table 8 (read here
  from the paper itself) and the registry's class counts;
- a run's record stores its peak RSS and its precision;
- a full disk is one line naming the path and "no space left", leaves no temporary file and
  keeps the last good checkpoint and every existing record;
- a corrupt image is named when a worker reads it.
The memory targets themselves are measured by the rehearsal (README), not here.
"""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heartbench.data import vtab
from heartbench.data.rehearsal import TEST_SIZES, write_fullsize
from heartbench.data.tasks import get_benchmark, resolve_task
from heartbench.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PAPER = Path("/work/shared/paper/heart-lora-paper.md")


def tiny_suite(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(f"""
[suite]
name = "tiny"
benchmark = "synth"
data_root = "{data}"
tasks = ["colors"]
seeds = [0]
[backbone]
name = "vit_test"
[train]
epochs = 2
warmup_epochs = 1
batch_size = 16
{extra}
[[methods]]
name = "lora"
config = {{ rank = 2 }}
""")
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heartbench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tasks=["colors"])
    return root


# ---------------------------------------------------------------------------
# Memory: what the cache keeps
# ---------------------------------------------------------------------------
def test_only_the_training_splits_are_cached(tmp_path, synth):
    from heartbench.suite import load_suite
    from heartbench.train import make_dataset

    spec = load_suite(tiny_suite(tmp_path, synth)).runs[0]
    vtab.clear_decoded_cache()
    for split, cached in (("train", True), ("search_train", True), ("search_val", False),
                          ("test", False)):
        vtab.clear_decoded_cache()  # val200 and train800 are part of train800val200
        dataset = make_dataset(spec, split, 32, train=split != "test")
        for i in range(len(dataset)):
            dataset[i]
        assert len(vtab._DECODED) == (len(dataset) if cached else 0), split
    vtab.clear_decoded_cache()


def test_cache_stays_under_its_byte_budget(monkeypatch, synth):
    from heartbench.data.transforms import vtab_transform

    info = resolve_task("synth", "colors")
    dataset = vtab.VTABDataset(synth, info, "train800val200", vtab_transform(32), cache=True)
    one = 3 * 32 * 32 * 4  # a float32 3x32x32 tensor
    monkeypatch.setattr(vtab, "DECODED_CACHE_BYTES", 10 * one)
    vtab.clear_decoded_cache()
    for i in range(len(dataset)):
        image, _ = dataset[i]
        assert torch.equal(image, dataset._load(dataset.samples[i][0]))
    assert len(vtab._DECODED) == 10 and vtab._decoded_bytes == 10 * one
    # The oldest went first: the last ten images are the ones kept.
    kept = [key[0] for key in vtab._DECODED]
    assert kept == [str(p) for p, _ in dataset.samples[-10:]]
    vtab.clear_decoded_cache()
    assert vtab._decoded_bytes == 0


# ---------------------------------------------------------------------------
# Full-size rehearsal data
# ---------------------------------------------------------------------------
def paper_test_sizes() -> dict[str, int]:
    """Table 8's test sizes, read from the paper text."""
    names = {"CIFAR100": "cifar", "Caltech101": "caltech101", "DTD": "dtd",
             "Oxford-Flowers102": "oxford_flowers102", "Oxford-Pets": "oxford_iiit_pet",
             "SVHN": "svhn", "Sun397": "sun397", "Patch Camelyon": "patch_camelyon",
             "EuroSAT": "eurosat", "Resisc45": "resisc45", "Retinopathy": "diabetic_retinopathy",
             "Clevr/count": "clevr_count", "Clevr/distance": "clevr_dist", "DMLab": "dmlab",
             "KITTI-Dist": "kitti", "dSprites/location": "dsprites_loc",
             "dSprites/orientation": "dsprites_ori", "SmallNORB/azimuth": "smallnorb_azi",
             "SmallNORB/elevation": "smallnorb_ele"}
    text = PAPER.read_text(encoding="utf-8")
    table = text[text.index("#Classes"):text.index("Few-shot\tFood-101")]
    sizes = {}
    for line in table.splitlines():
        cells = [c for c in line.split("\t") if c.strip()]
        if cells and cells[0] == "VTAB-1k":
            cells = cells[1:]
        if cells and cells[0] in names:
            sizes[names[cells[0]]] = int(cells[-1].replace(",", ""))
    return sizes


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper text is not on this machine")
def test_rehearsal_sizes_are_table_8s():
    assert paper_test_sizes() == TEST_SIZES
    assert set(TEST_SIZES) == set(get_benchmark("vtab1k"))


def test_fullsize_writer_layout_counts_and_classes(tmp_path):
    out = tmp_path / "full"
    summary = write_fullsize(out, ["sun397", "dsprites-loc"], max_test=30)
    assert summary == {name: {"train800": 800, "val200": 200, "train800val200": 1000,
                              "test": 30} for name in ("sun397", "dsprites_loc")}
    vtab.validate_vtab(out, "vtab1k", ["sun397", "dsprites_loc"],
                       ("train800", "val200", "train800val200", "test"))
    for name, classes in (("sun397", 397), ("dsprites_loc", 16)):
        labels = [int(line.split()[1]) for line in
                  (out / name / "train800val200.txt").read_text().splitlines()]
        assert set(labels) == set(range(classes))  # every class present (1,000 >= 397)
        lines = (out / name / "train800val200.txt").read_text().splitlines()
        assert lines[:800] == (out / name / "train800.txt").read_text().splitlines()
        image = vtab.load_rgb(out / name / lines[0].split()[0])
        assert image.size == (224, 224)
        # Small files: 73,728 of them must fit a few hundred MB.
        assert (out / name / lines[0].split()[0]).stat().st_size < 8000


def test_fullsize_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "heartbench", "data", "synth", "--full-size",
                           "--tasks", "kitti", "--max-test", "5", "--size", "64", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "vtab1k/kitti: structured 4 classes, train800=800 val200=200 train800val200=1000" \
           " test=5" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "heartbench", "data", "synth", "--full-size",
                           "--out", str(tmp_path / "e")], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "--full-size needs --tasks" in proc.stderr


# ---------------------------------------------------------------------------
# A run's record: peak RSS and precision
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory, synth: Path) -> dict:
    from heartbench.suite import load_suite
    from heartbench.train import execute

    tmp = tmp_path_factory.mktemp("run")
    spec = load_suite(tiny_suite(tmp, synth)).runs[0]
    return execute(spec, tmp / "results")


def test_record_stores_peak_rss_and_precision(record):
    assert record["status"] == "done"
    assert record["train"]["precision"] == "fp32"
    peak = record["peak_rss_bytes"]
    # At least what torch alone takes, and no more than the machine has.
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 50 * 2**20 < peak < total


def test_peak_rss_sees_a_large_allocation():
    import mmap

    from heartbench.provenance import peak_rss_bytes, reset_peak_rss

    # Fresh anonymous pages: an allocator may hand back memory that a freed tensor left
    # resident (late in a long pytest session it did), which would not raise the peak.
    size = 64 * 2**20
    block = mmap.mmap(-1, size)
    reset_peak_rss()
    before = peak_rss_bytes()
    block.write(b"\x01" * size)  # touch every page
    after = peak_rss_bytes()
    block.close()
    assert after - before >= 60 * 2**20


# ---------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_while_checkpointing(tmp_path, monkeypatch):
    from heartbench.train import load_checkpoint, save_checkpoint

    ckpt = tmp_path / "run.final.ckpt"
    save_checkpoint(ckpt, {"epoch": 3, "x": torch.zeros(4)})

    real_save = torch.save

    def partial_then_full(obj, f, *args, **kwargs):  # some bytes land, then the disk fills
        f.write(b"PK\x03\x04 partial")
        _enospc()

    monkeypatch.setattr(torch, "save", partial_then_full)
    with pytest.raises(UserError) as info:
        save_checkpoint(ckpt, {"epoch": 4, "x": torch.ones(4)})
    message = str(info.value)
    assert "no space left" in message and str(ckpt) in message and "\n" not in message
    # The last good checkpoint and its progress marker (4 epochs done), nothing partial.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.final.ckpt", "run.final.ckpt.epoch"]
    assert (tmp_path / "run.final.ckpt.epoch").read_text().strip() == "4"
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(ckpt)["epoch"] == 3  # the last good one is intact


def test_full_disk_when_the_record_is_written_keeps_other_records(tmp_path, synth, monkeypatch):
    import os

    from heartbench.results import record_path
    from heartbench.suite import load_suite
    from heartbench.train import execute

    results = tmp_path / "results"
    spec = load_suite(tiny_suite(tmp_path, synth)).runs[0]
    other = record_path(results, spec.suite, "0123456789abcdef")
    other.parent.mkdir(parents=True)
    other.write_text('{"kept": true}\n')
    real_fsync = os.fsync
    calls = []

    def fsync(fd):  # checkpoints fsync too: fail only once the record is being written
        calls.append(fd)
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{spec.run_id}"):
            _enospc()
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(UserError) as info:
        execute(spec, results)
    message = str(info.value)
    assert "no space left" in message and f"{spec.run_id}.json" in message
    left = sorted(p.name for p in other.parent.iterdir())
    # No temporary file; the last epoch checkpoint (a complete file) stays for the rerun.
    assert not [n for n in left if n.endswith(".tmp")], left
    assert other.read_text() == '{"kept": true}\n'
    assert not record_path(results, spec.suite, spec.run_id).exists()


def test_full_disk_when_the_adapter_is_written(tmp_path, synth, monkeypatch):
    import safetensors.torch

    from heartbench.suite import load_suite
    from heartbench.train import execute

    def partial(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        _enospc()

    monkeypatch.setattr(safetensors.torch, "save_file", partial)
    spec = load_suite(tiny_suite(tmp_path, synth)).runs[0]
    with pytest.raises(UserError, match=f"no space left on the device writing .*{spec.run_id}"
                                        r"\.safetensors"):
        execute(spec, tmp_path / "results")
    folder = tmp_path / "results" / spec.suite
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("target", ["checkpoint", "adapter", "record"])
def test_full_disk_through_run_is_one_line_naming_the_path(tmp_path, synth, monkeypatch,
                                                           capsys, target):
    """``heartbench run`` (in process, debug executor) on a disk that fills while the run
    writes its second epoch's checkpoint, its adapter or its record: exit code 1, exactly
    one line says "no space left" and names the file, and no partial or temporary file
    stays (a checkpoint of a finished epoch stays, for the rerun to resume from)."""
    import os

    import safetensors.torch

    from heartbench.cli import main
    from heartbench.suite import load_suite

    suite = tiny_suite(tmp_path, synth)
    spec = load_suite(suite).runs[0]
    results = tmp_path / "results"
    folder = results / spec.suite
    if target == "checkpoint":  # the same simulations as the unit tests above
        # Three epochs: checkpoints after the first two (none after the last); the second fails.
        suite.write_text(suite.read_text().replace("epochs = 2", "epochs = 3"))
        spec = load_suite(suite).runs[0]
        real_save, saves = torch.save, []

        def save(obj, f, *args, **kwargs):
            if str(getattr(f, "name", f)).endswith(".ckpt.tmp"):
                saves.append(f)
                if len(saves) == 2:  # the first epoch's checkpoint is written, then full
                    f.write(b"PK\x03\x04 partial")
                    _enospc()
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
        named = folder / f"{spec.run_id}.final.ckpt"
    elif target == "adapter":
        def partial(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"half a file")
            _enospc()

        monkeypatch.setattr(safetensors.torch, "save_file", partial)
        named = folder / f"{spec.run_id}.safetensors"
    else:
        real_fsync = os.fsync

        def fsync(fd):
            if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{spec.run_id}"):
                _enospc()
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        named = folder / f"{spec.run_id}.json"
    code = main(["run", str(suite), "--results-dir", str(results), "--executor", "debug"])
    out, err = capsys.readouterr()
    assert code != 0, (out, err)
    full = [line for line in (out + err).splitlines() if "no space left" in line]
    assert len(full) == 1 and str(named) in full[0], (out, err)
    assert "Traceback" not in out + err
    left = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert not [n for n in left if n.endswith(".tmp")], left
    assert f"{spec.run_id}.json" not in left, left
    # The adapter and the record are written only when complete: neither is half there.
    if target != "record":
        assert f"{spec.run_id}.safetensors" not in left, left
    if target == "checkpoint":  # the first epoch's checkpoint, intact, for the rerun
        assert f"{spec.run_id}.final.ckpt" in left, left
        assert (folder / f"{spec.run_id}.final.ckpt.epoch").read_text().strip() == "1"
        monkeypatch.undo()
        assert torch.load(named, weights_only=False)["epoch"] == 0


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    from heartbench.train import save_checkpoint

    def denied(obj, f, *args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(OSError, match="Permission denied"):
        save_checkpoint(tmp_path / "x.ckpt", {"epoch": 0})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# A corrupt image met by a worker
# ---------------------------------------------------------------------------
def test_corrupt_image_is_named_when_read(tmp_path, synth):
    import shutil

    from heartbench.data.transforms import vtab_transform

    copy = tmp_path / "data"
    shutil.copytree(synth / "colors", copy / "colors")
    info = resolve_task("synth", "colors")
    dataset = vtab.VTABDataset(copy, info, "test", vtab_transform(32))
    victim = dataset.samples[5][0]
    victim.write_bytes(victim.read_bytes()[:200])
    dataset[4]
    with pytest.raises(UserError, match=re.escape(f"image {victim} cannot be decoded")):
        dataset[5]
    victim.write_bytes(b"<html>not an image</html>")
    with pytest.raises(UserError, match=re.escape(f"image {victim} cannot be decoded")):
        dataset[5]


# ---------------------------------------------------------------------------
# GPU readiness script: its CPU path (no GPU here)
# ---------------------------------------------------------------------------
SCRIPT = REPO / "scripts" / "gpu_readiness.py"


def test_gpu_readiness_refuses_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no CUDA device" in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow  # a whole launch in subprocesses
def test_gpu_readiness_cpu_path_saves_both_reports(tmp_path):
    out = tmp_path / "ready"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--out", str(out), "--backbone", "vit_test",
         "--size", "32", "--max-test", "20", "--steps", "4", "--bench-args",
         "--methods heart_lora --reps 1 --steps 1 --no-peft --batch 4"],
        capture_output=True, text=True, cwd=REPO, timeout=1500,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    summary = json.loads((out / "summary.json").read_text())
    bench = json.loads((out / "bench" / "gpu_readiness.json").read_text())
    record = json.loads(Path(summary["run_record"]).read_text())
    assert bench["meta"]["device"] == "cpu" and bench["meta"]["backbone"] == "vit_test"
    assert set(bench["precision"]["heart_lora"]["step_s"]) == {"fp32", "bf16"}
    assert (out / "bench" / "gpu_readiness.md").is_file()
    assert record["status"] == "done" and record["method"] == "heart_lora"
    assert record["task"] == "kitti" and record["train"]["device"] == "cpu"
    assert record["train"]["precision"] == "fp32" and record["peak_rss_bytes"] > 0
    assert summary["run_test_acc"] == record["metrics"]["test_acc"]
    # Full-size training split, capped test split.
    assert len((out / "data" / "kitti" / "train800val200.txt").read_text().splitlines()) == 1000
    assert len((out / "data" / "kitti" / "test.txt").read_text().splitlines()) == 20
