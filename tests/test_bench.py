"""The benchmark's own arithmetic, its limits and gates, and a --quick smoke run.

No timing assertions: timings on a shared CPU say nothing about correctness.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch.nn import functional as F

from heartbench import bench
from heartbench.adapters import create_method
from heartbench.adapters.base import AdaptedLinear
from heartbench.adapters.fourierft import FourierDelta
from heartbench.adapters.lora import LowRankDelta
from heartbench.bench.limits import place_gates


# ---------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------
def test_median_ignores_missing_values() -> None:
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([4.0, None, 1.0, 2.0, 3.0]) == 2.5
    assert bench.median([None, None]) is None
    assert bench.median([]) is None


def test_ratio_and_paired_ratio() -> None:
    assert bench.ratio(3.0, 2.0) == 1.5
    assert bench.ratio(None, 2.0) is None
    assert bench.ratio(1.0, 0.0) is None
    # Per-repetition ratios 1.1, 1.2, 0.9 -> median 1.1 (not the ratio of medians).
    num, den = [1.1, 2.4, 0.9], [1.0, 2.0, 1.0]
    assert bench.paired_ratio(num, den) == pytest.approx(1.1)
    assert bench.median(num) / bench.median(den) == pytest.approx(1.1)
    assert bench.paired_ratio([2.0, None], [1.0, 1.0]) == 2.0


def test_rotate() -> None:
    assert bench.rotate(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert bench.rotate(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert bench.rotate(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert bench.rotate([], 3) == []


def test_schedule_runs_every_case_once_per_rep_groups_adjacent_and_rotating() -> None:
    groups = [["L1", "a", "b"], ["L2", "c"], ["L3"]]
    order = bench.schedule(groups, reps=3)
    assert order[0] == ["L1", "a", "b", "L2", "c", "L3"]
    assert order[1] == ["c", "L2", "L3", "a", "b", "L1"]
    assert order[2] == ["L3", "b", "L1", "a", "L2", "c"]
    every = sorted(c for g in groups for c in g)
    for names in order:
        assert sorted(names) == every
        for group in groups:  # a group's cases are neighbours in time
            positions = sorted(names.index(c) for c in group)
            assert positions == list(range(positions[0], positions[0] + len(group)))
    # No case always runs first.
    assert len({names[0] for names in order}) == 3


def test_peak_from_events() -> None:
    assert bench.peak_from_events([]) == 0
    assert bench.peak_from_events([10, 5, -12, 20, -23]) == 23
    assert bench.peak_from_events([-8, 4]) == 0  # frees of earlier tensors only


def test_extrapolation_and_scoring_fraction() -> None:
    assert bench.extrapolate_step(0.5, batch=8) == pytest.approx(4.0)
    assert bench.extrapolate_step(0.5, batch=8, to_batch=16) == pytest.approx(1.0)
    # 15 steps of 2 s = 30 s; 15 x 0.01 s listeners + 0.15 s mask = 0.3 s -> 1 %.
    assert bench.scoring_fraction(0.01, 0.15, 2.0) == pytest.approx(0.01)
    assert bench.scoring_fraction(0.0, 0.0, 2.0, steps_per_epoch=10) == 0.0


def test_suite_gpu_hours() -> None:
    # 2 runs x (100 x 15 steps x 0.024 s + 12 s eval) = 2 x 48 s = 96 s.
    assert bench.suite_gpu_hours(2, 0.024, 12.0) == pytest.approx(96 / 3600)
    assert bench.suite_gpu_hours(3, 0.0, 0.0) == 0.0


def test_check_target() -> None:
    assert bench.check_target("k", "w", 1.04, "<=", 1.05)["met"] is True
    assert bench.check_target("k", "w", 1.06, "<=", 1.05)["met"] is False
    assert bench.check_target("k", "w", 0.99, ">=", 0.98)["met"] is True
    row = bench.check_target("k", "w", None, "<=", 1.0)
    assert row["met"] is None and row["target"] == "<= 1"


def test_targets_cover_steps_memory_peft_merge_and_aux() -> None:
    rows = {"lora": {"limit": "limit:qkv[q,v]", "step_ratio": 1.02, "memory_ratio": 1.2}}
    report = {"methods": rows,
              "peft": {"lora": {"ours_qkv": {"step_ratio": 0.9}, "ours_qv": {"step_ratio": 1.1}}},
              "inference": {"lora": {"merged": True, "ratio": 0.99},
                            "vpt_deep": {"merged": False, "ratio": 0.5}},
              "scoring": {"fraction_of_epoch": 0.02},
              "tables": {"first_s": 3.0}, "planning": {"load_suite_s": 0.2}}
    met = {t["key"]: t["met"] for t in bench.targets(report)}
    assert met == {"step:lora": True, "memory:lora": False, "peft:lora:qkv": True,
                   "peft:lora:qv": False, "merged:lora": True, "scoring": False,
                   "tables": True, "planning": True}


def test_command_module_does_not_import_torch_at_top() -> None:
    import subprocess
    import sys

    code = "import sys, heartbench.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------
# Limits and gates
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,config,key", [
    ("lora", {}, "qkv[q,v]"), ("lora", {"targets": "qkv"}, "qkv[qkv]"),
    ("fourierft", {"n_frequency": 100}, "qkv[q,v]"), ("mora", {}, "qkv[q,v]"),
    ("heart_lora", {}, "qkv[q,v]"), ("full", {}, "patch"), ("bitfit", {}, "patch"),
    ("linear", {}, "head"), ("adaptformer", {}, "mlp"), ("adapter", {}, "mlp"),
    ("compacter", {}, "attn+mlp"), ("fact_tt", {}, "linears"), ("ssf", {}, "ssf_ops"),
    ("vpt_shallow", {}, "block0_in"), ("vpt_deep", {}, "blocks_in"),
])
def test_limit_of_each_method(tiny, name: str, config: dict, key: str) -> None:
    method = create_method(name, config)
    method.attach(tiny())
    assert bench.limit_spec(method).key == key


@pytest.mark.parametrize("key", ["qkv[q,v]", "qkv[qkv]", "patch", "mlp", "attn+mlp", "linears",
                                 "ssf_ops", "block0_in", "blocks_in", "head"])
def test_gates_keep_the_output_and_receive_gradients(tiny, key: str) -> None:
    """The backward pass reaches every gated site, and each gate's gradient is the sum of
    the gradient there.

    Not ``gate.grad != 0``: a gate before a LayerNorm (attention, MLP, proj and fc2 outputs,
    a block's input, the patch embedding) adds one value to all of a token's features, which
    the LayerNorm removes, so its true gradient is exactly zero; autograd returns rounding
    noise, which some CPU kernels (AVX-512/AMX machines) round to exactly 0."""
    plain = tiny()
    backbone = bench.clone_backbone(plain)
    gates = place_gates(backbone, key)
    assert (len(gates.params) == 0) == (key == "head")
    assert len(gates.sites) == len(gates.params)
    # Hooks registered after the gates see each gated tensor and keep its gradient.
    seen: dict[int, torch.Tensor] = {}

    def keep(module: torch.nn.Module, tensor: torch.Tensor) -> None:
        tensor.register_hook(lambda g: seen.__setitem__(id(module), g.double()))

    for module, _, where in {id(site[0]): site for site in gates.sites}.values():  # unique
        if where == "output":
            module.register_forward_hook(lambda m, args, out: keep(m, out))
        else:
            module.register_forward_pre_hook(lambda m, args: keep(m, args[0]))
    x = torch.randn(2, 3, 32, 32)
    out = backbone.model(x)
    torch.testing.assert_close(out, plain.model(x))  # gates start at zero
    out.square().sum().backward()
    for gate, (module, rows, _) in zip(gates.params, gates.sites):
        g = seen[id(module)]
        g = g if rows is None else g[..., rows[0]:rows[1]]
        assert g.abs().max() > 0  # the backward pass reaches the site
        # fp32 sum of n terms: exact to within n * eps * sum|g| (a recursive sum's bound).
        bound = g.numel() * torch.finfo(torch.float32).eps * g.abs().sum()
        assert gate.grad is not None
        assert abs(gate.grad.double() - g.sum()) <= bound, (key, gate.grad, g.sum(), bound)


def test_slice_gate_gradient_is_the_slice_sum() -> None:
    weight = torch.randn(6, 4)
    x = torch.randn(3, 4, requires_grad=True)
    gate = torch.zeros((), requires_grad=True)
    out = bench._slice_gate().apply(F.linear(x, weight), gate, (2, 4))
    coeff = torch.randn(3, 6)
    (out * coeff).sum().backward()
    assert gate.grad == pytest.approx(coeff[:, 2:4].sum().item(), rel=1e-5)
    torch.testing.assert_close(x.grad, coeff @ weight)


def test_clone_shares_frozen_storage_not_parameters(tiny) -> None:
    template = tiny()
    clone = bench.clone_backbone(template)
    w0 = template.sites[0].base_qkv.weight
    w1 = clone.sites[0].base_qkv.weight
    assert w0 is not w1 and w0.data_ptr() == w1.data_ptr()
    assert clone.head.weight.data_ptr() != template.head.weight.data_ptr()
    assert clone.head.weight.requires_grad and not w1.requires_grad
    w1.requires_grad_(True)
    assert not w0.requires_grad


# ---------------------------------------------------------------------------
# AdaptedLinear's fast paths (changed for this benchmark) give autograd's gradients
# ---------------------------------------------------------------------------
def _qkv_layer(d: int = 16) -> torch.nn.Linear:
    torch.manual_seed(0)
    layer = torch.nn.Linear(d, 3 * d)
    layer.requires_grad_(False)
    return layer


def test_weight_deltas_on_slices_match_dense_autograd() -> None:
    d = 16
    adapted = AdaptedLinear(_qkv_layer(d))
    adapted.add("q", FourierDelta(d, d, 40, 3.0, 7), 0, d)
    adapted.add("v", FourierDelta(d, d, 40, 3.0, 7), 2 * d, 3 * d)
    x = torch.randn(2, 5, d, requires_grad=True)
    coeff = torch.randn(2, 5, 3 * d)
    (adapted(x) * coeff).sum().backward()
    ours = [adapted.deltas[n].spectrum.grad.clone() for n in "qv"] + [x.grad.clone()]
    x.grad = None
    for n in "qv":
        adapted.deltas[n].spectrum.grad = None
    base = adapted.base
    weight = torch.cat([base.weight[:d] + adapted.deltas["q"].delta_weight(), base.weight[d:2 * d],
                        base.weight[2 * d:] + adapted.deltas["v"].delta_weight()])
    (F.linear(x, weight, base.bias) * coeff).sum().backward()
    reference = [adapted.deltas[n].spectrum.grad for n in "qv"] + [x.grad]
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)


def test_weight_deltas_under_cpu_autocast_and_without_input_grad() -> None:
    d = 16
    adapted = AdaptedLinear(_qkv_layer(d))
    adapted.add("q", FourierDelta(d, d, 40, 3.0, 7), 0, d)
    x = torch.randn(2, 5, d, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = adapted(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32
    assert adapted.deltas["q"].spectrum.grad.dtype == torch.float32
    adapted(torch.randn(2, 5, d)).sum().backward()  # frozen input (first layer)


@pytest.mark.parametrize("targets", [("q", "v"), ("qkv",)])
def test_activation_deltas_match_out_of_place_autograd(targets: tuple[str, ...]) -> None:
    d = 16
    adapted = AdaptedLinear(_qkv_layer(d))
    rows = {"q": (0, d), "v": (2 * d, 3 * d), "qkv": (0, 3 * d)}
    for t in targets:
        start, stop = rows[t]
        delta = LowRankDelta(d, stop - start, rank=4, scale=2.0, dropout=0.0)
        torch.nn.init.normal_(delta.B)
        adapted.add(t, delta, start, stop)
    for needs_grad in (True, False):
        x = torch.randn(2, 5, d, requires_grad=needs_grad)
        coeff = torch.randn(2, 5, 3 * d)
        (adapted(x) * coeff).sum().backward()
        ours = [p.grad.clone() for p in adapted.deltas.parameters()]
        grad_x = x.grad.clone() if needs_grad else None
        adapted.zero_grad(set_to_none=True)
        x.grad = None
        out = F.linear(x, adapted.base.weight, adapted.base.bias)
        pieces = [torch.zeros_like(out)]
        for t in targets:
            start, stop = rows[t]
            pad = torch.zeros_like(out)
            pad[..., start:stop] = adapted.deltas[t](x)
            pieces.append(pad)
        (sum(pieces, out) * coeff).sum().backward()
        for a, p in zip(ours, adapted.deltas.parameters()):
            torch.testing.assert_close(a, p.grad)
        if needs_grad:
            torch.testing.assert_close(grad_x, x.grad)
        adapted.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------
# Smoke run
# ---------------------------------------------------------------------------
def _args(tmp_path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--backbone", "vit_test", "--batch", "4", "--reps", "1",
                              "--steps", "1", "--out", str(tmp_path)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.mark.slow
def test_quick_smoke_run_reports_every_method_and_field(tmp_path, capsys) -> None:
    methods = ["lora", "fourierft", "heart_lora", "linear", "vpt_shallow"]
    assert bench.main(_args(tmp_path, methods=",".join(methods))) == 0
    report = json.loads((tmp_path / "quick.json").read_text())
    assert (tmp_path / "quick.md").read_text().startswith("### heartbench bench")
    for key in bench.REPORT_KEYS:
        assert key in report, key
    for key in bench.META_KEYS:
        assert key in report["meta"], key
    assert report["meta"]["backbone"] == "vit_test" and report["meta"]["batch"] == 4
    assert set(methods) | {"lora[qkv]", "fourierft[qkv]"} == set(report["methods"])
    for name, row in report["methods"].items():
        for key in bench.METHOD_KEYS:
            assert key in row, (name, key)
        assert row["step_s"] > 0 and row["peak_bytes"] > 0
        assert row["limit"] in report["cases"]
    for name, case in report["cases"].items():
        for key in bench.CASE_KEYS:
            assert key in case, (name, key)
        assert len(case["step_s_reps"]) == 1
    assert {"limit:patch", "limit:qkv[q,v]", "limit:head", "limit:block0_in"} <= set(
        report["cases"])
    assert set(report["inference"]) == set(methods)
    assert report["inference"]["lora"]["merged"] and not report["inference"]["vpt_shallow"]["merged"]
    if report["peft"] is not None:
        assert {"lora", "fourierft"} == set(report["peft"])
        assert "ours_qkv" in report["peft"]["lora"] and "ours_qv" in report["peft"]["lora"]
    assert 0 <= report["scoring"]["fraction_of_epoch"] < math.inf
    assert report["planning"]["runs"] == 19 * 16
    assert report["data"]["images_per_s_from_32px"] > 0
    assert {t["key"] for t in report["targets"]} >= {"step:lora", "memory:lora", "tables",
                                                     "planning", "scoring"}
    assert "wrote" in capsys.readouterr().out


def test_unknown_method_is_a_user_error(tmp_path) -> None:
    from heartbench.errors import UserError

    with pytest.raises(UserError, match="unknown method 'lorra'.*did you mean 'lora'"):
        bench.Settings.from_args(_args(tmp_path, methods="lorra"))
    with pytest.raises(UserError, match="--batch must be >= 1"):
        bench.Settings.from_args(_args(tmp_path, batch=-1))
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        bench.Settings.from_args(_args(tmp_path, precision="fp32,fp16"))


# ---------------------------------------------------------------------------
# --out, the GPU estimate and the profiler's noise
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("out", ["x.json", "report.md"])
def test_out_is_a_folder_and_a_file_name_is_refused_before_anything_runs(tmp_path, out) -> None:
    import subprocess
    import sys

    code = subprocess.run([sys.executable, "-m", "heartbench", "bench", "--quick", "--out", out],
                          cwd=tmp_path, capture_output=True, text=True)
    assert code.returncode == 2
    assert code.stderr.count("\n") == 1 and f"--out {out}: expected an output folder" in code.stderr
    assert "--name" in code.stderr
    assert list(tmp_path.iterdir()) == []  # no folder named x.json


def test_out_that_is_a_file_is_refused(tmp_path) -> None:
    from heartbench.errors import UserError

    (tmp_path / "taken").write_text("keep me")
    with pytest.raises(UserError, match="is a file; expected an output folder"):
        bench.Settings.from_args(_args(tmp_path, out=tmp_path / "taken"))
    assert (tmp_path / "taken").read_text() == "keep me"


def test_out_help_says_what_is_written(capsys) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    parser.print_help()
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--out DIR output folder" in help_text
    assert "DIR/NAME.json and DIR/NAME.md" in help_text


def test_report_files_go_into_the_out_folder(tmp_path, monkeypatch) -> None:
    from heartbench.bench import render

    report = {"meta": {}, "x": 1}
    out = tmp_path / "new" / "folder"
    monkeypatch.setattr(render, "render_markdown", lambda r: "md\n")
    json_path, md_path = bench.write_report(report, out, "quick")
    assert (json_path, md_path) == (out / "quick.json", out / "quick.md")
    assert json.loads(json_path.read_text()) == report
    assert sorted(p.name for p in out.iterdir()) == ["quick.json", "quick.md"]  # no temp files


def _estimate_inputs(tmp_path, backbone: str):
    from heartbench.bench.cases import Case, CaseSet

    settings = bench.Settings.from_args(_args(tmp_path, backbone=backbone, batch=8))
    found = CaseSet()
    ref = Case("limit:patch", "limit", None, "patch", {})
    ref.flops, ref.times = 2e9, [0.5, 0.4, 0.6]
    found.cases[ref.name] = ref
    rows = {"lora": {"step_s": 0.8}, "not_in_the_suite": {"step_s": 1.0}}
    return settings, found, rows


def test_gpu_estimate_is_only_made_for_the_suite_backbone(tmp_path) -> None:
    from heartbench.bench.estimate import suite_estimate, suite_plan

    settings, found, rows = _estimate_inputs(tmp_path, "vit_mini")
    est = suite_estimate(settings, found, rows, {}, 1e9)
    assert "methods" not in est and "vit_base_patch16_224" in est["note"]
    backbone, runs = suite_plan()
    assert backbone.split(".")[0] == "vit_base_patch16_224"  # a tag picks weights only
    settings, found, rows = _estimate_inputs(tmp_path, "vit_base_patch16_224")
    est = suite_estimate(settings, found, rows, {"lora": {"ratio": 0.5}}, 1e9)
    assert set(est["methods"]) == {"lora"}
    # CPU: 2 GFLOP in 0.5 s = 4 GFLOP/s; GPU/CPU = 200 TFLOP/s / 4 GFLOP/s = 50,000.
    assert est["gpu_over_cpu"] == pytest.approx(200e12 / 4e9)
    step_gpu = 0.8 * 64 / 8 / 50_000
    eval_gpu = sum(bench_estimate_sizes().values()) / 19 * 1e9 * 2 / 200e12  # ratio 0.5: x2
    lora = est["methods"]["lora"]
    assert lora["runs"] == runs["lora"]
    assert lora["gpu_h"] == pytest.approx(runs["lora"] * (1500 * step_gpu + eval_gpu) / 3600)


def bench_estimate_sizes() -> dict[str, int]:
    from heartbench.bench.estimate import VTAB1K_TEST_SIZES

    assert len(VTAB1K_TEST_SIZES) == 19
    return VTAB1K_TEST_SIZES


def test_quiet_profiler_drops_kineto_lines_and_keeps_the_rest(capfd) -> None:
    import os

    from heartbench.bench.timing import quiet_profiler

    kineto = ("USDT:2026-11-28 23:04:14 9485:9485 SyncActivityProfilerHandler.cpp:39]"
              " profiler_start\nERROR:2026-11-28 23:04:14 9485:9485 DeviceProperties.cpp:56]"
              " gpuGetDeviceCount failed with code 35\n")
    with quiet_profiler():
        os.write(2, kineto.encode())
        os.write(2, b"a real warning\n")
    err = capfd.readouterr().err
    assert err == "a real warning\n"


def test_a_profiled_step_writes_nothing_to_stderr(tiny, capfd) -> None:
    """The profiler's C++ side writes start/stop lines (and a CUDA probe's error on a
    machine without a GPU) to fd 2 on every profiled step; none may reach the terminal."""
    from heartbench.bench.cases import CaseSet, Workload, add_method_case
    from heartbench.bench.timing import profile_step

    backbone = tiny()
    work = Workload(backbone, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    found = CaseSet()
    add_method_case(found, work, torch.device("cpu"), "lora", "lora", "method", {})
    case = found.cases["lora"]
    case.step()
    capfd.readouterr()
    for _ in range(2):
        profile_step(case, work.images, work.labels, torch.device("cpu"))
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert case.peak_bytes > case.resident_bytes > 0 and case.flops > 0


# ---------------------------------------------------------------------------
# --precision
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_step_of_a_precision_runs_the_model_in_it(tiny, precision, dtype) -> None:
    from heartbench.bench.cases import make_step

    backbone = tiny()
    seen = []
    backbone.sites[0].attn.qkv.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    params = backbone.head_parameters()
    step, _ = make_step(backbone.model, params, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]),
                        torch.device("cpu"), precision)
    before = params[0].detach().clone()
    loss = step()
    assert seen == [dtype] and loss.dtype == torch.float32
    assert params[0].dtype == torch.float32 and not torch.equal(params[0], before)  # trained


def test_precision_section_times_every_method_in_every_precision(tiny, tmp_path) -> None:
    from heartbench.bench.cases import Workload
    from heartbench.bench.precision import precision_steps

    settings = bench.Settings.from_args(_args(tmp_path, precision="fp32,bf16", reps=2))
    work = Workload(tiny(), torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    out = precision_steps(settings, work, ["lora", "linear"])
    assert set(out) == {"lora", "linear"}
    for row in out.values():
        assert set(row["step_s"]) == {"fp32", "bf16"} and min(row["step_s"].values()) > 0
        assert row["ratio_to_fp32"]["fp32"] == 1.0  # paired ratio of a case with itself
    report = {"precision": out}
    from heartbench.bench.render import _precision

    lines = _precision(report)
    assert any(line.startswith("| lora |") for line in lines)
