"""No data command leaves a partial data folder behind: every task (synthetic benchmark,
full-size rehearsal data, ``data prepare``, the twins) appears whole or not at all, SIGTERM
removes the task being written, and a writer killed outright leaves a hidden folder that
the next write of the task removes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_twin_data import _Interrupt, _interrupt_after  # the same interrupted writer

from heartbench.cli import main as cli
from heartbench.data import prepare as prep
from heartbench.data import writing
from heartbench.data.manifest import VTAB1K
from heartbench.data.rehearsal import write_fullsize
from heartbench.data.synth import N_TEST, N_TRAIN, N_VAL, write_synth
from heartbench.data.twin import write_vtab_mini
from heartbench.data.twin.writer import OWNER_FILE, UNOWNED_STALE_S

SYNTH_IMAGES = N_TRAIN + N_VAL + N_TEST  # images of one synthetic task


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _complete(folder: Path) -> bool:
    return all((folder / f"{s}.txt").is_file() for s in ("train800", "val200",
                                                         "train800val200", "test"))


# --- (a) an interrupted write leaves no task folder and no hidden folder --------------------


def test_an_interrupted_synth_write_keeps_finished_tasks_and_nothing_else(tmp_path, monkeypatch):
    write_image = writing.write_image
    monkeypatch.setattr(writing, "write_image", _interrupt_after(10, write_image))
    with pytest.raises(_Interrupt):
        write_synth(tmp_path / "a")
    assert _entries(tmp_path / "a") == []  # neither colors/ nor a hidden partial folder

    # Stopped in the second task: the first is whole, the second is not there at all.
    monkeypatch.setattr(writing, "write_image", _interrupt_after(SYNTH_IMAGES + 10, write_image))
    with pytest.raises(_Interrupt):
        write_synth(tmp_path / "b")
    assert _entries(tmp_path / "b") == ["colors"] and _complete(tmp_path / "b" / "colors")


def test_an_interrupted_fullsize_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(writing, "write_image", _interrupt_after(300, writing.write_image))
    with pytest.raises(_Interrupt):
        write_fullsize(tmp_path, ["kitti"], size=16, max_test=20)
    assert _entries(tmp_path) == []  # the old writer wrote in place: kitti/ without lists


def _kitti_example(split: str, i: int) -> dict:
    rng = np.random.default_rng([zlib.crc32(split.encode()), i])
    n = int(rng.integers(1, 4))
    return {"image": rng.integers(0, 256, (6, 6, 3), dtype=np.uint8),
            "objects": {"type": rng.integers(0, 8, n),
                        "location": rng.uniform(0, 60, (n, 3)).astype(np.float32)}}


def test_an_interrupted_prepare_keeps_the_older_copy(tmp_path, monkeypatch):
    task = dataclasses.replace(VTAB1K["kitti"], tfds_sizes={"train": 30, "validation": 10,
                                                            "test": 20}, splits={
        "train800": "train[:8]", "val200": "validation[:2]",
        "train800val200": "train[:8]+validation[:2]", "test": "test"})
    source = prep.fake_source(task.tfds_sizes, _kitti_example)
    monkeypatch.setattr(prep, "save_image", _interrupt_after(15, prep.save_image))
    with pytest.raises(_Interrupt):
        prep.prepare_task(tmp_path, task, source, fmt="png")
    assert _entries(tmp_path) == []  # the old writer left images and two of the four lists
    monkeypatch.undo()
    assert prep.prepare_task(tmp_path, task, source, fmt="png")["test"] == 20
    before = {p: p.read_bytes() for p in (tmp_path / "kitti").rglob("*") if p.is_file()}
    monkeypatch.setattr(prep, "save_image", _interrupt_after(15, prep.save_image))
    with pytest.raises(_Interrupt):
        prep.prepare_task(tmp_path, task, source, fmt="jpg")
    after = {p: p.read_bytes() for p in (tmp_path / "kitti").rglob("*") if p.is_file()}
    assert _entries(tmp_path) == ["kitti"] and after == before  # the PNG copy, untouched


# --- (b) SIGTERM: the data command removes the task being written, exits 143 --------------

FULLSIZE = ["data", "synth", "--full-size", "--tasks", "dsprites_loc", "--size", "16"]


def _start_writer(out: Path) -> subprocess.Popen:
    """The full-size dsprites_loc data (74,728 images): it runs long enough to be stopped."""
    return subprocess.Popen([sys.executable, "-m", "heartbench", *FULLSIZE, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_mid_write(proc: subprocess.Popen, out: Path, ceiling_s: float = 120.0) -> None:
    """Until images are being written (into the hidden folder; the old writer: in place)."""
    deadline = time.monotonic() + ceiling_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(out.glob(".dsprites_loc.partial-*/dsprites_loc/images/train/*.jpg")) or \
                any(out.glob("dsprites_loc/images/train/*.jpg")):
            return
        time.sleep(0.05)
    proc.kill()
    out_text, err_text = proc.communicate()
    pytest.fail(f"the writer never started writing (rc {proc.returncode}): {err_text[-2000:]}")


def test_sigterm_mid_write_exits_143_and_leaves_nothing(tmp_path):
    out = tmp_path / "full"
    proc = _start_writer(out)
    _wait_mid_write(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "rerun" in lines[0], err
    assert _entries(out) == []  # no dsprites_loc/, no .dsprites_loc.partial-*


def test_sigterm_in_process_is_143_and_the_old_handler_comes_back(tmp_path, monkeypatch, capsys):
    class _Default(Exception):  # what SIGTERM does outside the command (the old code: this)
        pass

    def default(signum, frame):
        raise _Default

    previous = signal.signal(signal.SIGTERM, default)
    try:
        write_image = writing.write_image
        count = [0]

        def terminated_after_50(*args, **kwargs):
            count[0] += 1
            if count[0] == 50:
                os.kill(os.getpid(), signal.SIGTERM)
            return write_image(*args, **kwargs)

        monkeypatch.setattr(writing, "write_image", terminated_after_50)
        assert cli(["data", "synth", "--out", str(tmp_path)]) == 143
        assert signal.getsignal(signal.SIGTERM) is default
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert _entries(tmp_path) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not all written" in err[0] and "rerun" in err[0]


# --- (c) a hidden folder left by a killed writer is removed by the next write ---------------


def _hidden(out: Path, name: str, owner: dict | None = None, age_s: float = 0.0) -> Path:
    folder = out / name
    (folder / "digits8" / "images" / "train").mkdir(parents=True)
    (folder / "digits8" / "images" / "train" / "000000.png").write_bytes(b"half")
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner))
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_partial_folders_are_removed_by_the_next_write(tmp_path):
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = [_hidden(tmp_path, ".digits8.partial-xyz", {"host": host, "pid": _dead_pid()}),
                 _hidden(tmp_path, ".digits8.partial-older", None, 2 * UNOWNED_STALE_S),
                 _hidden(tmp_path, ".digits8.old-abc", None, 2 * UNOWNED_STALE_S)]
        kept = [_hidden(tmp_path, ".digits8.partial-live", {"host": host, "pid": live.pid}),
                _hidden(tmp_path, ".digits8.partial-elsewhere", {"host": host + "-x", "pid": 1}),
                _hidden(tmp_path, ".digits8.partial-new", None),  # its owner file is coming
                _hidden(tmp_path, ".colors.partial-abc", {"host": host, "pid": _dead_pid()})]
        write_vtab_mini(tmp_path, tasks=["digits8"])
        assert sorted(p.name for p in stale if p.exists()) == []
        assert _entries(tmp_path) == sorted(["digits8"] + [p.name for p in kept])
        assert _complete(tmp_path / "digits8")
    finally:
        live.kill()
        live.wait()


def test_a_killed_writers_folder_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "full"
    proc = _start_writer(out)
    _wait_mid_write(proc, out)
    proc.kill()  # SIGKILL: no clean-up can run
    proc.communicate(timeout=60)
    assert [p.name.split("-")[0] for p in out.iterdir()] == [".dsprites_loc.partial"]
    write_fullsize(out, ["dsprites_loc"], size=16, max_test=10)
    assert _entries(out) == ["dsprites_loc"] and _complete(out / "dsprites_loc")
