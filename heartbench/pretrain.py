"""``heartbench pretrain``: pretrain the CPU twin's small backbones on Fashion-MNIST.

No registry package ships pretrained ViT weights, so the VTAB-mini twin gets its "pretrained"
backbones here: ``vit_mini`` / ``swin_mini`` (see :data:`heartbench.backbones.PRESETS`) are
trained from scratch on the full Fashion-MNIST training set (Debian ``dataset-fashion-mnist``)
at the twin's input format: 28x28 grey padded to 32x32 (no resampling, like the twin's
``pad_to``), replicated to 3 channels, values in [0, 1] without normalisation (the VTAB
protocol of Bi-LoRA and the paper).

Output: ``<out>/<arch>_fmnist.safetensors`` (backbone only, timm key names, fp32, loadable
with ``build_backbone(arch, C, weights=path)``) and ``<out>/<arch>_fmnist.json`` (sha256,
the exact command, seed, epochs, test accuracy, wall time, versions).

Torch is imported inside the functions: ``--help`` imports every command module.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from heartbench.errors import UserError

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
ARCHS = ("vit_mini", "swin_mini")
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SIZE = 32  # the twin's input side
INSTALL_HINT = "apt-get install dataset-fashion-mnist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=ARCHS, default="vit_mini",
                        help="backbone preset to pretrain (default: vit_mini)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs over the 60,000 training images; sets the LR schedule")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=150)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--out", default="weights", metavar="DIR",
                        help="output folder (default: weights/, where the committed twin"
                             " backbones are replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="training time limit: the cosine schedule follows whichever of "
                             "steps or time is further along, and training stops cleanly at "
                             "the limit (test evaluation and saving come after it)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help=f"Fashion-MNIST folder with the 4 idx(.gz) files (default: {DEFAULT_DATA})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")


# --- data ----------------------------------------------------------------------------------

def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"Fashion-MNIST file {root / name}.gz not found; install the data set with: "
                    f"{INSTALL_HINT} (or pass --data FOLDER)")


def read_idx(path: Path) -> Any:
    """An IDX file (the MNIST format, optionally gzipped) as a uint8 numpy array."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise UserError(f"Fashion-MNIST file {path} is unreadable ({err}); reinstall with: "
                        f"{INSTALL_HINT}") from None
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
    # big-endian int32 per dimension.
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserError(f"Fashion-MNIST file {path} is not a uint8 IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(data) - start != math.prod(shape):
        raise UserError(f"Fashion-MNIST file {path} is truncated: header says {shape}")
    # A copy: torch refuses to wrap read-only buffers without a warning.
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape).copy()


def load_fashion_mnist(root: str | Path, split: str) -> tuple[Any, Any]:
    """(images uint8 N x 28 x 28, labels int64 N) of ``split`` ("train" or "test")."""
    import numpy as np

    root = Path(root)
    images_name, labels_name = SPLITS[split]
    images = read_idx(_find(root, images_name))
    labels = read_idx(_find(root, labels_name)).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST in {root}: {split} images {images.shape} do not match "
                        f"labels {labels.shape}")
    return images, labels


def data_files(root: str | Path) -> list[Path]:
    root = Path(root)
    return [_find(root, name) for pair in SPLITS.values() for name in pair]


def to_input(images: Any) -> Any:
    """uint8 (N, 28, 28) numpy/torch -> float (N, 3, 32, 32) in [0, 1]: zero-padded, grey x3."""
    import torch

    x = torch.as_tensor(images)
    pad_h, pad_w = SIZE - x.shape[-2], SIZE - x.shape[-1]
    x = torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return (x.float() / 255.0).unsqueeze(1).expand(-1, 3, -1, -1)


def _augment(x: Any, generator: Any, pad: int = 2) -> Any:
    """Random crop with ``pad`` px zero padding and horizontal flip, per image."""
    import torch

    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy: dy + SIZE, dx: dx + SIZE] for i, (dy, dx) in enumerate(offsets)])
    out[flips] = out[flips].flip(-1)
    return out


# --- training ------------------------------------------------------------------------------

def _lr_factor(step: int, progress: float, warmup_steps: int, min_factor: float) -> float:
    """Linear warm-up times cosine decay over ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    cosine = min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * cosine


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def command_line(args: argparse.Namespace) -> str:
    """The full command that reproduces this run, every option explicit."""
    parts = ["python -m heartbench pretrain", f"--arch {args.arch}", f"--epochs {args.epochs}",
             f"--batch-size {args.batch_size}", f"--lr {args.lr:g}",
             f"--weight-decay {args.weight_decay:g}", f"--warmup-steps {args.warmup_steps}",
             f"--label-smoothing {args.label_smoothing:g}", f"--out {args.out}",
             f"--seed {args.seed}", f"--data {args.data}", f"--threads {args.threads}"]
    if args.max_minutes is not None:
        parts.append(f"--max-minutes {args.max_minutes:g}")
    return " ".join(parts)


def evaluate(model: Any, images: Any, labels: Any, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x = to_input(images[start: start + batch_size])
            pred = model(x).argmax(1)
            correct += int((pred == torch.as_tensor(labels[start: start + batch_size])).sum())
    return 100.0 * correct / len(labels)


def main(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.batch_size < 1:
        raise UserError(f"--epochs and --batch-size must be >= 1 (got {args.epochs}, {args.batch_size})")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise UserError(f"--max-minutes must be > 0 (got {args.max_minutes})")
    # Check the data before paying for the torch import.
    files = data_files(args.data)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")

    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.optim import param_groups_weight_decay

    from heartbench.backbones import PRESETS, build_backbone

    torch.set_num_threads(args.threads)
    train_x, train_y = load_fashion_mnist(args.data, "train")
    test_x, test_y = load_fashion_mnist(args.data, "test")
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)

    torch.manual_seed(args.seed)
    # The same construction path users take (then everything is made trainable); no
    # drop-path: a few epochs from scratch converge faster without it.
    backbone = build_backbone(args.arch, len(CLASSES), drop_path_rate=0.0)
    model = backbone.model
    for p in model.parameters():
        p.requires_grad_(True)
    groups = param_groups_weight_decay(model, args.weight_decay, model.no_weight_decay())
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    generator = torch.Generator().manual_seed(args.seed)

    steps_per_epoch = len(train_y) // args.batch_size  # drop_last: equal-size steps
    total_steps = steps_per_epoch * args.epochs
    budget_s = None if args.max_minutes is None else args.max_minutes * 60
    tty = sys.stderr.isatty()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"pretrain {args.arch}: {n_params / 1e6:.2f}M parameters, {len(train_y)} training "
          f"images, {args.epochs} epochs x {steps_per_epoch} steps of {args.batch_size}"
          + (f", at most {args.max_minutes:g} min" if budget_s else ""), flush=True)

    history: list[dict[str, Any]] = []
    step = 0
    stop_reason = None
    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = None
        if tty:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for i in range(steps_per_epoch):
            elapsed = time.monotonic() - start
            progress = step / total_steps
            if budget_s is not None:
                if elapsed >= budget_s:
                    stop_reason = f"--max-minutes {args.max_minutes:g} reached"
                    break
                # A slow (shared) machine still anneals the learning rate before the limit.
                progress = max(progress, elapsed / budget_s)
            lr = args.lr * _lr_factor(step, progress, args.warmup_steps, 0.01)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[i * args.batch_size: (i + 1) * args.batch_size]
            x = _augment(to_input(train_x[idx]), generator)
            y = train_y[idx]
            logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
                bar.update()
        if bar is not None:
            bar.close()
        if seen:
            row = {"epoch": epoch, "steps": seen // args.batch_size, "loss": round(loss_sum / seen, 4),
                   "train_acc": round(100 * correct / seen, 2), "lr": lr,
                   "elapsed_s": round(time.monotonic() - start, 1)}
            history.append(row)
            print(f"epoch {epoch}/{args.epochs}: {row['steps']} steps, loss {row['loss']:.4f}, "
                  f"train acc {row['train_acc']:.2f}%, lr {lr:.2e}, "
                  f"{row['elapsed_s'] / 60:.1f} min", flush=True)
        if stop_reason:
            print(f"stopping: {stop_reason} after {step} of {total_steps} steps", flush=True)
            break
    train_time = time.monotonic() - start

    test_acc = evaluate(model, test_x, test_y)
    wall = time.monotonic() - start
    print(f"{args.arch}: Fashion-MNIST test accuracy {test_acc:.2f}% "
          f"({step / steps_per_epoch:.2f} epochs, {train_time / 60:.1f} min training)", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    head = backbone.head
    head_ids = {id(p) for p in head.parameters()}
    head_keys = {name for name, p in model.named_parameters() if id(p) in head_ids}
    # Backbone only, in timm key names; load_weights would drop a head anyway.
    state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()
             if k not in head_keys}
    weights_path = out / f"{args.arch}_fmnist.safetensors"
    arch, kwargs = PRESETS[args.arch]
    meta = {"arch": args.arch, "timm_model": arch, "kwargs": json.dumps(kwargs),
            "trained_on": "fashion-mnist train (60000), 32x32 RGB, [0,1] unnormalised",
            "fmnist_test_acc": f"{test_acc:.2f}", "command": command_line(args)}
    save_file(state, str(weights_path), metadata=meta)
    record = {
        "file": weights_path.name,
        "sha256": _sha256(weights_path),
        "bytes": weights_path.stat().st_size,
        "dtype": "float32",
        "arch": args.arch,
        "timm_model": arch,
        "kwargs": kwargs,
        "parameters": sum(v.numel() for v in state.values()),
        "command": command_line(args),
        "seed": args.seed,
        "epochs": args.epochs,
        "epochs_completed": round(step / steps_per_epoch, 3),
        "steps": step,
        "steps_planned": total_steps,
        "stopped_early": stop_reason,
        "hyperparameters": {
            "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
            "warmup_steps": args.warmup_steps, "schedule": "linear warm-up, cosine to 1% of lr",
            "label_smoothing": args.label_smoothing, "optimizer": "AdamW",
            "augmentation": "random crop (2 px zero padding) + horizontal flip",
            "drop_path_rate": 0.0, "threads": args.threads,
        },
        "input": "28x28 grey zero-padded to 32x32, replicated to 3 channels, [0, 1], no normalisation",
        "data": {"path": str(Path(args.data)), "train_images": len(train_y),
                 "test_images": len(test_y),
                 "sha256": {f.name: _sha256(f) for f in files}},
        "test_acc": round(test_acc, 2),
        "history": history,
        "train_time_s": round(train_time, 1),
        "wall_time_s": round(wall, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": timm.__version__, "numpy": np.__version__},
        "cpu": platform.processor() or platform.machine(),
    }
    json_path = out / f"{args.arch}_fmnist.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {weights_path} ({record['bytes'] / 1e6:.2f} MB, sha256 {record['sha256']}) "
          f"and {json_path}", flush=True)
    return 0
