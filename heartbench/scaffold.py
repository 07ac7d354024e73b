"""``python -m heartbench new-method NAME --out DIR``: a plugin method to start from.

Writes three files into ``DIR`` (made if needed; an existing file is never replaced):

* ``NAME.py`` -- the plugin: a config dataclass and a :class:`~heartbench.adapters.QKVMethod`
  with a documented low-rank update of q and v, registered as ``NAME``;
* ``test_NAME.py`` -- pytest: the contract check (:func:`heartbench.testing.check_method`)
  on the method, and the suite planning it;
* ``NAME_suite.toml`` -- a suite that runs it beside LoRA and Bi-LoRA on the CPU twin
  (``vtab_mini``: one task, a short schedule), ``python -m heartbench run NAME_suite.toml``.

All three work as written; edit the method's ``make_delta`` and its delta class.
"""

from __future__ import annotations

import argparse
import keyword
from pathlib import Path

from heartbench.errors import UserError

PLUGIN = '''"""{name}: a PETL method for heartbench, as a plugin (no fork of heartbench needed).

heartbench imports this file when a suite names it (``[suite] plugins = ["{name}.py"]``) or
``python -m heartbench methods --plugins {name}.py``; ``@register("{name}")`` makes the method
available under that name. Only ``heartbench.adapters`` is used: its ``__all__`` is the
stable interface (docs/your-method.md).

As written: a low-rank update ``delta W = B A`` of the q and v slices of every attention
layer's fused qkv projection (LoRA without dropout). Change ``{cls}Delta`` to try your idea.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from heartbench.adapters import Delta, MethodConfig, QKVMethod, register, require


class {cls}Delta(Delta):
    """The update of one output slice (q or v) of a frozen qkv Linear.

    ``forward(x)`` is added to that slice of the Linear's output; ``delta_weight()`` is the
    same update as a weight (d_out x d_in), which ``merge`` folds into the frozen weight.
    Every ``nn.Parameter`` here is trained and stored (``save_adapter``).
    """

    def __init__(self, d_in: int, d_out: int, rank: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.A = nn.Parameter(torch.empty(rank, d_in))
        self.B = nn.Parameter(torch.zeros(d_out, rank))  # zero: training starts at the backbone
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x @ self.A.t()) @ self.B.t()

    def delta_weight(self) -> torch.Tensor:
        return self.scale * self.B @ self.A


@dataclass
class {cls}Config(MethodConfig):
    """The method's settings: a suite sets them with ``config = {{ rank = 4 }}`` or sweeps them
    with ``grid = {{ rank = [2, 4] }}``. Every field needs a default."""

    rank: int = 4
    scale: float = 1.0
    targets: str = "qv"  # which slices of the fused qkv get an update: "qv", "q", "qkv", ...

    def validate(self) -> None:
        """One clear line per impossible value (``require`` raises heartbench's UserError)."""
        require(self.rank > 0, f"rank must be a positive integer, got {{self.rank}}")


@register("{name}")
class {cls}(QKVMethod):
    """QKVMethod attaches one delta per target slice of every attention site and merges
    them; the trainer optimises ``trainable_parameters()`` (the deltas') plus the head."""

    config_cls = {cls}Config

    def make_delta(self, d_in: int, d_out: int) -> Delta:
        return {cls}Delta(d_in, d_out, self.config.rank, self.config.scale)
'''

TEST = '''"""The contract check on {name}: python -m pytest test_{name}.py"""

from pathlib import Path

from heartbench.plugins import load_plugin
from heartbench.suite import load_suite
from heartbench.testing import check_method

HERE = Path(__file__).resolve().parent
load_plugin(str(HERE / "{name}.py"))  # registers "{name}"


def test_{name}_keeps_the_method_contract():
    # Only its parameters train, its stored size is what save_adapter writes, save/load and
    # merge keep the outputs, its hooks keep the model's mode: on a tiny ViT, in seconds.
    result = check_method("{name}", {{"rank": 2}})
    assert result["trainable_params"] > 0


def test_the_suite_runs_{name}_beside_the_baselines():
    suite = load_suite(HERE / "{name}_suite.toml")
    assert {{run.method for run in suite.runs}} == {{"{name}", "lora", "bilora"}}
'''

SUITE = '''# {name} beside the paper's LoRA and Bi-LoRA on the CPU twin (vtab_mini), tiny on purpose:
#   python -m heartbench run {name}_suite.toml
#   python -m heartbench tables --benchmarks vtab_mini
# The twin's data is written under data_root on first use. For the real benchmark use
# benchmark = "vtab1k" and the paper's schedule (suites/vtab1k.toml in heartbench).
[suite]
name = "{name}"
benchmark = "vtab_mini"
data_root = "data/vtab-mini"
tasks = ["digits8"]
seeds = [0]
plugins = ["{name}.py"]          # relative to this file

[backbone]
name = "vit_mini"                 # the twin's ViT: 32 px, patch 4, 12 heads
{weights}
[train]
epochs = 1
warmup_epochs = 0
lr = 5e-3
batch_size = 64
max_train_batches = 4             # a quick look; 0 trains on every batch

[launcher]
executor = "local"
timeout_min = 30

[[methods]]
name = "{name}"
label = "{label}"
config = {{ rank = 4 }}

[[methods]]
name = "lora"
label = "LoRA"
config = {{ rank = 8, scale = 1.0 }}

[[methods]]
name = "bilora"
label = "Bi-LoRA"
config = {{ rank = 32, bits = 1, scale = 1.0 }}
'''


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the method's registry name (a Python identifier)")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="folder to write NAME.py, test_NAME.py, NAME_suite.toml (default .)")


def twin_weights() -> Path | None:
    """The twin ViT's pretrained weights in this heartbench checkout, if there."""
    path = Path(__file__).resolve().parents[1] / "weights" / "vit_mini_fmnist.safetensors"
    return path if path.is_file() else None


def files_for(name: str) -> dict[str, str]:
    """File name -> content of the skeleton for method ``name``."""
    cls = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Method"
    weights = twin_weights()
    weights_line = (f'weights = "{weights}"   # pretrained on Fashion-MNIST (heartbench pretrain)\n'
                    if weights else "")
    return {
        f"{name}.py": PLUGIN.format(name=name, cls=cls),
        f"test_{name}.py": TEST.format(name=name),
        f"{name}_suite.toml": SUITE.format(name=name, label=cls, weights=weights_line),
    }


def check_name(name: str) -> None:
    from heartbench.adapters import METHODS

    if not name.isidentifier() or keyword.iskeyword(name) or not name.islower():
        raise UserError(f"method name {name!r} must be a lower-case Python identifier"
                        " (letters, digits, '_'), e.g. my_lora")
    if name in METHODS:
        raise UserError(f"method name {name!r} is taken by a built-in method; pick another")


def main(args: argparse.Namespace) -> int:
    check_name(args.name)
    files = files_for(args.name)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    taken = [out / f for f in files if (out / f).exists()]
    if taken:
        raise UserError(f"{taken[0]} already exists; not replacing it (choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        tmp = out / f".{file}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / file)
    print(f"wrote {', '.join(str(out / f) for f in files)}")
    print(f"next: cd {out} && python -m pytest test_{args.name}.py && python -m heartbench run"
          f" {args.name}_suite.toml")
    return 0
