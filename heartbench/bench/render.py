"""The report as Markdown (printed and written beside the JSON), and the atomic write of
both files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from heartbench.bench.limits import REFERENCE_LIMIT
from heartbench.bench.stats import PROTOCOL_BATCH


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _header(report: dict[str, Any]) -> list[str]:
    m = report["meta"]
    load = ", ".join(f"{x:.1f}" for x in m["load_avg"] or [])
    return [
        f"### heartbench bench: {m['backbone']}, batch {m['batch']}",
        "",
        f"Machine: {m['machine']} ({m['cpu']}); device {m['device']}; {m['threads']} threads;"
        f" {m.get('openmp', '')}; torch {m['torch']}, timm {m['timm']}, peft {m['peft']},"
        f" Python {m['python']}; {m['reps']} interleaved reps x {m['steps']} step(s), medians;"
        f" {m['date']}; load average at start {load}; took {_f(m['elapsed_s'], '{:.0f}')} s.",
    ]


def _methods(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Training step (forward + backward + AdamW) and peak memory against each method's limit"
        " (the frozen backbone with a trainable scalar gate at every site the method adapts)."
        " `x limit` is the median over reps of the paired wall-time ratio; `(cpu)` the same in"
        " process CPU time (steadier on a shared machine); `x ref` is against the frozen backbone"
        " whose gradient reaches the patch embedding.",
        "",
        "| method | step ms | x limit | (cpu) | x ref | peak MiB | mem x limit | GFLOP x limit |"
        " inference x plain | limit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in report["methods"].items():
        inf = "–" if row["inference_ratio"] is None else (
            f"{row['inference_ratio']:.3f}" + (" merged" if row["merged"] else " unmerged"))
        lines.append(
            f"| {name} | {_ms(row['step_s'])} | {_f(row['step_ratio'], '{:.3f}')} |"
            f" {_f(row.get('cpu_ratio'), '{:.3f}')} | {_f(row['vs_reference'], '{:.3f}')} |"
            f" {_mib(row['peak_bytes'])} | {_f(row['memory_ratio'], '{:.3f}')} |"
            f" {_f(row['gflop_ratio'], '{:.3f}')} | {inf} | {row['limit']} |")
    return lines


def _limit_cases(report: dict[str, Any]) -> list[str]:
    lines = ["", "Limits, reference and PEFT cases:", "",
             "| case | step ms | cpu ms | peak MiB | GFLOP | trainable | what |",
             "|---|---:|---:|---:|---:|---:|---|"]
    limits = report.get("limits", {})
    for name, c in report["cases"].items():
        if c["kind"] in ("limit", "peft"):
            what = limits.get(c["limit"], "") if c["kind"] == "limit" else "Hugging Face PEFT"
            lines.append(f"| {name} | {_ms(c['step_s'])} | {_ms(c.get('cpu_s'))} |"
                         f" {_mib(c['peak_bytes'])} | {_f(c['gflops'], '{:.1f}')} |"
                         f" {c['trainable_params']} | {what} |")
    noise = report.get("noise") or {}
    if noise.get("equal_limits_wall") is not None:
        lines += ["", f"Noise floor: two limits of equal cost (qkv[q,v] and qkv[qkv] gates) measure"
                  f" {noise['equal_limits_wall']:.3f} (wall) and"
                  f" {_f(noise.get('equal_limits_cpu'), '{:.3f}')} (cpu) of each other."]
    return lines


def _peft(report: dict[str, Any]) -> list[str]:
    peft = report.get("peft") or {}
    if not peft:
        return []
    lines = ["", "Against Hugging Face PEFT on the whole fused qkv (`target_modules=[\"qkv\"]`),"
             " heartbench / PEFT step time (< 1: heartbench faster); wall (cpu):", "",
             "| method | ours targets=qkv (like for like) | ours targets=qv (default) |"
             " PEFT x ref | PEFT mem x limit | PEFT step ms |", "|---|---:|---:|---:|---:|---:|"]
    for kind, e in peft.items():
        cells = []
        for variant in ("qkv", "qv"):
            v = e.get(f"ours_{variant}", {})
            cells.append(f"{_f(v.get('step_ratio'), '{:.3f}')}"
                         f" ({_f(v.get('cpu_ratio'), '{:.3f}')})")
        lines.append(f"| {kind} | {cells[0]} | {cells[1]} |"
                     f" {_f(e['peft_vs_reference'], '{:.3f}')} |"
                     f" {_f(e.get('peft_memory_vs_limit'), '{:.3f}')} | {_ms(e['peft_step_s'])} |")
    return lines


def _inference_and_scoring(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    inference = report.get("inference") or {}
    if inference:
        clean = [n for n, i in inference.items() if i["merged"] and i.get("leftovers") == 0]
        lines += ["", "Inference (eval, no grad): merged models with no hook or wrapper left run"
                  f" exactly the plain backbone's ops: {', '.join(clean) or 'none'}; their timing"
                  " ratios differ from 1 by noise only."]
    s = report.get("scoring")
    if s:
        lines += ["", f"Responsiveness scoring (Heart-LoRA): listeners"
                  f" {s['listener_s_per_step'] * 1000:.2f} ms/step (paired step difference"
                  f" {_ms(s['paired_step_diff_s'])} ms, noise),"
                  f" compute_mask + apply_mask {s['compute_and_apply_mask_s'] * 1000:.2f} ms;"
                  f" epoch (15 steps of batch 64, extrapolated linearly) {s['epoch_s_at_batch_64']:.1f}"
                  f" s -> {s['fraction_of_epoch'] * 100:.3f} % of an epoch"
                  f" ({s['fraction_of_run'] * 100:.5f} % of a 100-epoch run)."]
    return lines


def _tooling_and_data(report: dict[str, Any]) -> list[str]:
    t, p, d = report["tables"], report["planning"], report["data"]
    tables = "; ".join(f"{v['records']}: first {_f(v['first_s'])} s, warm {_f(v['warm_s'])} s"
                       for k, v in t.items() if k in ("fixture", "results") and v)
    lines = ["", f"`tables` rebuild (in-process, --pdf skip): {tables or t.get('note')}."
             f" `run --dry-run` planning of {p.get('runs')} runs (19 tasks x 16 grid points):"
             f" load_suite {_f(p.get('load_suite_s'), '{:.3f}')} s, with the printed plan"
             f" {_f(p.get('dry_run_s'), '{:.3f}')} s."]
    loads = {k: v for k, v in d.items() if k.startswith("images_per_s_from_")}
    train_ips = d.get("training_images_per_s", {})
    shown = {k: v for k, v in train_ips.items() if k in ("lora", f"limit:{REFERENCE_LIMIT}")}
    lines += ["", "Data loading (VTAB-1K loader on synthetic VTAB-layout JPEGs, num_workers=0): "
              + ", ".join(f"{v:.0f} img/s from {k.split('_')[-1]}" for k, v in loads.items())
              + f" images resized to {d.get('input_size')} px; training on this machine: "
              + ", ".join(f"{k} {_f(v, '{:.1f}')} img/s" for k, v in shown.items()) + "."]
    return lines


def _estimate(report: dict[str, Any]) -> list[str]:
    est = report.get("suite_estimate") or {}
    if not est.get("methods"):
        return []
    lines = ["", f"Estimated GPU time of the full VTAB-1K suite (suites/vtab1k.toml, this"
             f" backbone) on one GPU sustaining {est['gpu_tflops_assumed']:g} TFLOP/s"
             f" (assumed; no GPU measured): this CPU did"
             f" {est['cpu_tflops_measured'] * 1000:.0f} GFLOP/s on the reference step, so"
             f" GPU/CPU = {est['gpu_over_cpu']:.0f}x.", "",
             "| method | runs | GPU step ms (batch 64) | GPU img/s | train GPU-h | eval GPU-h |"
             " GPU-h |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in est["methods"].items():
        lines.append(f"| {name} | {e['runs']} | {e['step_s_gpu_batch64'] * 1000:.1f} |"
                     f" {PROTOCOL_BATCH / e['step_s_gpu_batch64']:.0f} |"
                     f" {e['train_gpu_h']:.2f} | {e['eval_gpu_h']:.2f} | {e['gpu_h']:.2f} |")
    lines.append(f"| total | | | | | | {est['total_gpu_h']:.1f} |")
    return lines


def _precision(report: dict[str, Any]) -> list[str]:
    rows = report.get("precision") or {}
    if not rows:
        return []
    precisions = list(next(iter(rows.values()))["step_s"])
    first = precisions[0]
    lines = ["", f"Training step per precision (bf16 = torch.autocast), ms; x {first} is the"
             " paired ratio:", "",
             "| method | " + " | ".join(f"{p} ms | x {first}" for p in precisions) + " |",
             "|---|" + "---:|---:|" * len(precisions)]
    for name, row in rows.items():
        cells = [f"{_ms(row['step_s'][p])} | {_f(row[f'ratio_to_{first}'][p], '{:.3f}')}"
                 for p in precisions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _targets_and_notes(report: dict[str, Any]) -> list[str]:
    lines = ["", "Targets:", "", "| target | value | bound | met |", "|---|---:|---|---|"]
    for t in report["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        lines.append(f"| {t['what']} | {_f(t['value'], '{:.3f}')} | {t['target']} | {met} |")
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items())]
    if report.get("notes"):
        lines += ["", "Notes: " + "; ".join(report["notes"])]
    return lines


# The report's parts in order; a new part is one function added here.
SECTIONS = (_header, _methods, _limit_cases, _peft, _inference_and_scoring, _tooling_and_data,
            _estimate, _precision, _targets_and_notes)


def render_markdown(report: dict[str, Any]) -> str:
    return "\n".join(line for section in SECTIONS for line in section(report)) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    """``out/name.json`` and ``out/name.md``, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    _write_atomic(json_path, json.dumps(report, indent=2, default=str) + "\n")
    _write_atomic(md_path, render_markdown(report))
    return json_path, md_path
