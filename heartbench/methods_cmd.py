"""``python -m heartbench methods``: every registered method, its size on a backbone.

The backbone is built without weights. For each method with its default config: trainable
adapter parameters (head excluded), stored bytes (exactly what ``save_adapter`` writes for
the method, head excluded) and MiB (2^20 bytes, the paper's "MB"). Table 1's Size column is
this computation.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="vit_base_patch16_224",
                        help="timm model name or preset (default: vit_base_patch16_224)")
    parser.add_argument("--num-classes", type=int, default=100,
                        help="classes of the head, reported separately (default 100)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plugins", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="also import this plugin (a .py file or a module name) and list its"
                             " methods (repeatable)")
    parser.add_argument("--suite", help="also import the plugins this suite TOML names")


def load_requested_plugins(args: argparse.Namespace) -> None:
    """The plugins of ``--plugins``, ``--suite`` and the installed entry points."""
    from pathlib import Path

    from heartbench.plugins import load_entry_points, load_plugins
    from heartbench.suite import read_toml

    load_entry_points()
    load_plugins(args.plugins, Path.cwd(), "--plugins")
    if args.suite:
        path = Path(args.suite)
        entries = (read_toml(path).get("suite") or {}).get("plugins", [])
        load_plugins(entries, path.parent, f"{path}: suite.plugins")


def method_rows(backbone_name: str, num_classes: int = 100) -> list[dict[str, Any]]:
    import torch

    from heartbench.adapters import METHODS, create_method
    from heartbench.backbones import build_backbone
    from heartbench.errors import UserError
    from heartbench.plugins import plugin_of

    with torch.device("meta"):  # built once, shapes only; each method gets its own copy
        template = build_backbone(backbone_name, num_classes)
    rows = []
    for name in sorted(METHODS):
        torch.manual_seed(0)
        backbone = _uninitialised_copy(template)
        plugin = plugin_of(name)
        source = {"plugin": plugin.where} if plugin else {}
        method = create_method(name)
        try:
            method.check_backbone(backbone)
        except UserError as err:  # e.g. VPT on Swin: listed, not sized
            rows.append({"method": name, "unsupported": str(err), **source})
            continue
        method.attach(backbone)
        method.nominal_state()
        stored = method.stored_bytes()
        rows.append({
            "method": name, **source, "trainable_params": method.num_trainable(),
            "stored_bytes": stored,
            "stored_mib": stored / 2**20, "mergeable": method.mergeable,
            "head_params": sum(p.numel() for p in backbone.head_parameters()),
            "config": method.config.to_dict(),
        })
    return rows


def _uninitialised_copy(template: Any) -> Any:
    """A copy of the meta-device ``template`` with allocated but uninitialised weights.

    Sizes depend only on shapes; timm's weight init (truncated normals over 86M values,
    per method) made ``methods`` take over a minute on ViT-B, and building ViT-B once per
    method still cost seconds. Copying the meta template and then allocating skips both;
    the adapters attached afterwards initialise as usual.
    """
    import copy

    backbone = copy.deepcopy(template)
    backbone.model.to_empty(device="cpu")
    return backbone


def main(args: argparse.Namespace) -> int:
    from heartbench.errors import UserError

    if args.num_classes < 1:
        raise UserError(f"--num-classes must be >= 1, got {args.num_classes}")
    load_requested_plugins(args)
    rows = method_rows(args.backbone, args.num_classes)
    if args.json:
        print(json.dumps({"backbone": args.backbone, "methods": rows}, indent=2))
        return 0
    sized = [r for r in rows if "unsupported" not in r]
    print(f"backbone {args.backbone} (no weights); head excluded"
          f" ({sized[0]['head_params'] if sized else 0:,} params for {args.num_classes} classes)")
    print(f"{'method':<12} {'trainable params':>17} {'stored bytes':>13} {'MiB':>8}  merge  config")
    for r in rows:
        if "unsupported" in r:
            print(f"{r['method']:<12} {'-':>17} {'-':>13} {'-':>8}  -      not on this backbone:"
                  f" {r['unsupported']}")
            continue
        config = " ".join(f"{k}={v}" for k, v in r["config"].items())
        if "plugin" in r:
            config += f"  (plugin {r['plugin']})"
        print(f"{r['method']:<12} {r['trainable_params']:>17,} {r['stored_bytes']:>13,}"
              f" {r['stored_mib']:>8.3f}  {'yes' if r['mergeable'] else 'no ':<5}  {config}")
    return 0
