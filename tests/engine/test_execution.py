"""Batch planning, run files, and the `gni run` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gni_cli.main import main
from gni_engine.execution import bytes_per_run, execute_runs, plan_batches
from gni_engine.networks import MLP
from gni_engine.spec import parse_run_spec

SMALL = {
    "data": {"n_points": 32, "frequencies": [1.0, 2.0]},
    "model": {"hidden": [6]},
    "training": {"steps": 6},
    "analyses": {"record_every": 3, "noise_gap_samples": 2},
}


def _spec(**extra):
    return parse_run_spec({**SMALL, **extra})


def test_plan_groups_by_architecture_and_respects_cap_and_memory():
    wide = parse_run_spec({**SMALL, "model": {"hidden": [9]}})
    specs = [_spec(seed=i) for i in range(5)] + [wide]
    assert plan_batches(specs, memory_bytes=10**12) == [[0, 1, 2, 3, 4], [5]]
    capped = [parse_run_spec({**SMALL, "seed": i, "execution": {"max_batch_runs": 2}}) for i in range(5)]
    assert plan_batches(capped, memory_bytes=10**12) == [[0, 1], [2, 3], [4]]
    per_run = bytes_per_run(specs[0])
    assert plan_batches(specs[:5], memory_bytes=2 * 2 * per_run) == [[0, 1], [2, 3], [4]]


def test_a_batch_holds_every_cap_and_the_largest_run_in_any_order():
    # Runs of one architecture may differ in mode (an explicit run needs more memory) and in cap.
    loose = [_spec(seed=i) for i in range(4)]
    tight = [parse_run_spec({**SMALL, "seed": 9, "execution": {"max_batch_runs": 1}})]
    for specs in (loose + tight, tight + loose):
        assert [len(b) for b in plan_batches(specs, memory_bytes=10**12)] == [1, 1, 1, 1, 1]
    explicit = [
        parse_run_spec({**SMALL, "seed": i, "training": {"steps": 6, "mode": "explicit"}}) for i in range(4)
    ]
    heavy = bytes_per_run(explicit[0])
    assert heavy > bytes_per_run(loose[0])
    for specs in (loose[:1] + explicit, explicit + loose[:1]):
        batches = plan_batches(specs, memory_bytes=2 * 2 * heavy)  # the budget is half the memory
        assert sorted(len(b) for b in batches) == [1, 2, 2]


def test_each_device_is_planned_by_its_own_free_memory(monkeypatch: pytest.MonkeyPatch):
    import gni_engine.execution as execution
    import gni_engine.training as training

    on_cpu = [_spec(seed=i, execution={"device": "cpu"}) for i in range(5)]
    on_cuda = [_spec(seed=i, execution={"device": "cuda"}) for i in range(5)]
    per_run = bytes_per_run(on_cpu[0])
    free = {"cpu": 10**12, "cuda": 2 * 2 * per_run}  # the GPU fits two runs in its half
    measured: list[str] = []

    def free_memory(device: torch.device) -> int:
        measured.append(device.type)
        return free[device.type]

    monkeypatch.setattr(training, "resolve_device", lambda spec: torch.device(spec.execution.device))
    monkeypatch.setattr(execution, "free_memory_bytes", free_memory)
    for specs in (on_cpu + on_cuda, on_cuda + on_cpu):
        measured.clear()
        sizes: dict[str, list[int]] = {"cpu": [], "cuda": []}
        for batch in plan_batches(specs):
            sizes[specs[batch[0]].execution.device].append(len(batch))
        assert sizes == {"cpu": [5], "cuda": [2, 2, 1]}
        assert sorted(measured) == ["cpu", "cuda"]  # once per device, not once per group


def test_execute_runs_writes_loadable_files(tmp_path: Path):
    specs = [_spec(seed=0), _spec(seed=1, training={"steps": 6, "mode": "explicit"})]
    outcomes = execute_runs(specs, [tmp_path / "a", tmp_path / "b"], figures=False)
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["spec_hash"] == specs[0].spec_hash()
    assert results["summary"]["train_loss"] == outcomes[0].summary["train_loss"]
    assert len(results["summary"]["R_per_layer"]) == 2
    net = MLP(1, (6,), 1)
    net.load_state_dict(load_file(str(tmp_path / "a" / "model.safetensors")))
    table = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert list(table.columns) == ["run", "step", "name", "value"]
    assert set(table["step"]) == {0, 3, 6}
    final = table[(table.step == 6) & (table.name == "train_loss")]["value"].item()
    assert final == pytest.approx(outcomes[1].summary["train_loss"], rel=1e-12)


def test_missing_data_fails_only_its_batch(tmp_path: Path):
    image = parse_run_spec(
        {
            "task": "classification",
            "data": {"name": "mnist", "data_dir": str(tmp_path / "nowhere")},
            "model": {"hidden": [4]},
            "training": {"steps": 2},
        }
    )
    outcomes = execute_runs([image, _spec()], [tmp_path / "x", tmp_path / "y"], figures=False)
    assert outcomes[0].status == "failed" and "nowhere" in (outcomes[0].error or "")
    assert outcomes[1].status == "succeeded"
    # The failed run's folder says so, as every run's does.
    results = json.loads((tmp_path / "x" / "results.json").read_text())
    assert results["status"] == "failed" and "nowhere" in results["error"]
    assert results["spec_hash"] == image.spec_hash() and results["summary"]["engine_version"]
    assert json.loads((tmp_path / "x" / "spec.json").read_text())["data"]["name"] == "mnist"


def test_gni_run_command_sweep_and_no_batch_agree(tmp_path: Path, capsys):
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(
        "base:\n  data: {n_points: 32, frequencies: [1, 2]}\n  model: {hidden: [5]}\n"
        "  training: {steps: 5}\n  execution: {precision: fp64}\n"
        "  analyses: {record_every: 5, noise_gap_samples: 2}\n"
        "axes:\n  training.mode: [baseline, gni]\n  seed: [0, 1]\n"
    )
    assert main(["run", str(spec_file), "--out", str(tmp_path / "batched"), "--quiet"]) == 0
    single = [
        "run",
        str(spec_file),
        "--out",
        str(tmp_path / "single"),
        "--quiet",
        "--no-batch",
        "--no-figures",
    ]
    assert main(single) == 0
    out = capsys.readouterr().out
    assert "training.mode" in out and "succeeded" in out
    a = json.loads((tmp_path / "batched" / "sweep.json").read_text())["runs"]
    b = json.loads((tmp_path / "single" / "sweep.json").read_text())["runs"]
    assert len(a) == 4
    for x, y in zip(a, b, strict=True):
        assert x["coords"] == y["coords"]
        assert x["summary"]["train_loss"] == pytest.approx(y["summary"]["train_loss"], abs=1e-10)
        assert x["summary"]["batch_runs"] == 4 and y["summary"]["batch_runs"] == 1
    # The arms side by side, as the service and the presets draw them (not with --no-figures).
    assert (tmp_path / "batched" / "figures" / "loss_curves.png").is_file()
    assert not (tmp_path / "single" / "figures").exists()


def test_gni_run_without_figures_writes_everything_else(tmp_path: Path, capsys):
    spec_file = tmp_path / "run.yaml"
    spec_file.write_text(
        "data: {n_points: 32, frequencies: [1, 2]}\nmodel: {hidden: [5]}\ntraining: {steps: 5}\n"
        "analyses: {record_every: 5, noise_gap_samples: 2}\n"
    )
    assert main(["run", str(spec_file), "--out", str(tmp_path / "with"), "--quiet"]) == 0
    assert main(["run", str(spec_file), "--out", str(tmp_path / "without"), "--quiet", "--no-figures"]) == 0
    with_figures = {p.relative_to(tmp_path / "with") for p in (tmp_path / "with").rglob("*") if p.is_file()}
    without = {p.relative_to(tmp_path / "without") for p in (tmp_path / "without").rglob("*") if p.is_file()}
    assert {p for p in with_figures if p.parts[0] == "figures"}  # the loss curves at least
    assert without == {p for p in with_figures if p.parts[0] != "figures"}
    a = json.loads((tmp_path / "with" / "results.json").read_text())["summary"]
    b = json.loads((tmp_path / "without" / "results.json").read_text())["summary"]
    assert a["train_loss"] == b["train_loss"]
    capsys.readouterr()
    assert main(["run", "--preset", "spectral-bias", "--out", str(tmp_path / "p"), "--no-figures"]) == 2
    assert "--no-figures goes with a spec file" in capsys.readouterr().err


def test_gni_run_rejects_a_bad_spec_without_traceback(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"hidden": [4, -1]}, "noise": {"sigma": -0.5}}))
    proc = subprocess.run(
        [sys.executable, "-m", "gni_cli.main", "run", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "model.hidden[1]" in proc.stderr and "noise.sigma" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_results_record_device_and_precision(tmp_path: Path):
    outcome = execute_runs([_spec()], [tmp_path / "r"], figures=False)[0]
    assert outcome.summary["device"] == "cpu"
    assert outcome.summary["precision"] == "fp32"
    assert outcome.summary["engine_version"]
    assert torch.__version__ == outcome.summary["torch_version"]


def test_cost_estimates_count_matmuls_and_convolutions():
    from gni_engine.execution import estimate_flops
    from gni_engine.training import forward_macs

    conv = parse_run_spec(
        {
            "task": "classification",
            "data": {"name": "cifar10", "flatten": False},
            "model": {"kind": "convnet"},
        }
    )
    # 3×32×32, 4×4 stride 2: 15×15×32 outputs × 3·16, then 6×6×128 × 32·16, then a dense 128·36 → 10
    assert forward_macs(conv, (3, 32, 32), 10) == 15 * 15 * 32 * 48 + 6 * 6 * 128 * 512 + 128 * 36 * 10
    mlp = _spec()  # 1 → 6 → 1 on 32 points, full batch, 6 steps, gni with one draw
    training = 6.0 * (1 * 6 + 6 * 1) * 32 * 6
    forward = 2.0 * (1 * 6 + 6 * 1) * 32  # one forward pass over the 32 evaluation points
    # records at steps 0, 3, 6: losses 2F + R 3F (one output); summary: 2 noise-gap pairs, 4F
    assert estimate_flops(mlp) == training + 3 * 5 * forward + 4 * forward


def test_cost_estimates_count_what_the_analyses_ask_for():
    from gni_engine.execution import estimate_flops

    plain = _spec()
    heavy = _spec(analyses={**SMALL["analyses"], "noise_gap_samples": 1000, "noise_gap_every": True})
    forward = 2.0 * (1 * 6 + 6 * 1) * 32
    # 2000 noisy passes at each of the 3 record steps and at the summary, where plain took 4
    assert estimate_flops(heavy) - estimate_flops(plain) == (3 * 2000 + 2000 - 4) * forward
    capped = _spec(analyses={**SMALL["analyses"], "max_eval_points": 8})
    assert estimate_flops(plain) - estimate_flops(capped) == pytest.approx((15 + 4) * forward * (1 - 8 / 32))
