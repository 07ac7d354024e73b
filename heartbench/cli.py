"""``python -m heartbench <command>``: the one command line of heartbench.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``. Only the invoked command's module is imported, so ``--help`` and
the light commands (``tables``, ``check``) never pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from heartbench.errors import UserError, closest, error_lines

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("heartbench.launch", "expand a suite TOML into runs and execute them (local or Slurm)"),
    "status": ("heartbench.status", "tell what each run of a suite is doing (done, running, pending, failed)"),
    "tables": ("heartbench.report.build", "rebuild the paper's LaTeX tables and figures (into paper/, or --out DIR)"),
    "methods": ("heartbench.methods_cmd", "list registered methods with parameter counts and stored size"),
    "bench": ("heartbench.bench", "measure step time, memory and throughput of every method"),
    "data": ("heartbench.data.cli", "write synthetic/twin datasets; verify or prepare VTAB-1K and few-shot copies"),
    "pretrain": ("heartbench.pretrain", "pretrain the small CPU-twin backbones on Fashion-MNIST"),
    "check": ("heartbench.report.check", "check stored results against the paper's reported numbers"),
    "new-method": ("heartbench.scaffold", "write a plugin method to start from: the method, its contract test, a suite beside LoRA and Bi-LoRA"),
    "figure5": ("heartbench.figure5", "draw Figure 5 (attention maps of Heart-LoRA vs Bi-LoRA) from two records"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to define its options."""
    parser = _Parser(
        prog="heartbench",
        description="Reproducible PETL benchmark for vision transformers (Heart-LoRA and baselines).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(
            f"heartbench: error: unknown command {argv[0]!r}{closest(argv[0], COMMANDS)};"
            f" expected one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except UserError as err:
        for line in error_lines(err):
            print(f"heartbench {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heartbench: interrupted", file=sys.stderr)
        return 130
