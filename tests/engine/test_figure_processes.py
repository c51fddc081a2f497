"""Run figures drawn by several processes are the figures one process draws, whatever goes wrong."""

from __future__ import annotations

import logging
import multiprocessing
import sys
from pathlib import Path

import pytest

from gni_cli.main import main
from gni_engine.execution import execute_runs
from gni_engine.figures import processes
from gni_engine.figures.processes import FigureJob, deal, draw_figures
from gni_engine.spec import parse_run_spec
from gni_engine.training import BatchTrainer

SMALL = {
    "data": {"n_points": 32, "frequencies": [1.0, 2.0]},
    "model": {"hidden": [6, 6]},
    "training": {"steps": 6},
    "analyses": {"record_every": 3, "noise_gap_samples": 2, "layer_norms": True},
}


def _train(runs: int, **changes):
    specs = [parse_run_spec({**SMALL, **changes, "seed": seed}) for seed in range(runs)]
    trainer = BatchTrainer(specs)
    return trainer.run(), trainer.datasets


@pytest.fixture(scope="module")
def trained():
    """Two 1-D sinusoid runs: every kind of figure, the learned function drawn from the weights."""
    return _train(2)


@pytest.fixture(scope="module")
def light():
    """Three 2-D sinusoid runs: two figures each (loss, layer norms), cheaper to draw."""
    return _train(3, data={"n_points": 32, "dim": 2, "frequencies": [1.0]})


def _jobs(trained, root: Path) -> list[FigureJob]:
    states, datasets = trained
    return [FigureJob(s, d, root / f"run-{e}") for e, (s, d) in enumerate(zip(states, datasets, strict=True))]


def _contents(drawn: list[dict[str, Path]]) -> list[dict[str, bytes]]:
    return [{name: path.read_bytes() for name, path in files.items()} for files in drawn]


def test_deal_gives_every_run_once_in_chunks_worth_a_process():
    for n_jobs in range(0, 30):
        for processes_ in (1, 2, 3, 16):
            chunks = deal(n_jobs, processes_, min_runs_per_process=4)
            assert sorted(i for chunk in chunks for i in chunk) == list(range(n_jobs))
            assert 1 <= len(chunks) <= processes_
            assert len(chunks) == 1 or min(map(len, chunks)) >= 4
    with pytest.raises(ValueError, match="figure processes must be at least 1, got 0"):
        deal(5, 0)


def test_several_processes_draw_byte_identical_figures(trained, tmp_path: Path):
    alone = draw_figures(_jobs(trained, tmp_path / "one"), processes=1)
    shared = draw_figures(_jobs(trained, tmp_path / "two"), processes=2, min_runs_per_process=1)
    assert [set(files) for files in alone] == [set(files) for files in shared]
    assert {"loss_curves.png", "loss_curves.svg", "layer_norms.svg", "function.png"} <= set(alone[0])
    assert all(p.parent == tmp_path / "two" / f"run-{e}" for e, f in enumerate(shared) for p in f.values())
    # The runs differ, so identical bytes mean each figure went to its own run (SVG ids are salted).
    assert _contents(alone) == _contents(shared)
    assert alone[0]["loss_curves.svg"].read_bytes() != alone[1]["loss_curves.svg"].read_bytes()


def test_a_child_that_dies_has_its_runs_drawn_here(light, tmp_path: Path, monkeypatch, caplog):
    def dies(jobs_file: Path, result_file: Path) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.stderr.write('out of memory'); sys.exit(3)"]

    monkeypatch.setattr(processes, "child_command", dies)
    with caplog.at_level(logging.WARNING, logger="gni_engine.figures.processes"):
        drawn = draw_figures(_jobs(light, tmp_path), processes=3, min_runs_per_process=1)
    [one, two] = [r.getMessage() for r in caplog.records]
    assert "exited with 3; this process draws its 1 run(s) instead" in one and "out of memory" in one
    names = {"loss_curves.png", "loss_curves.svg", "layer_norms.png", "layer_norms.svg"}
    assert [set(files) for files in drawn] == [names] * 3
    assert all(
        path.parent == tmp_path / f"run-{e}" for e, files in enumerate(drawn) for path in files.values()
    )
    assert all(path.stat().st_size > 0 for files in drawn for path in files.values())


def test_a_drawing_error_is_raised_whichever_process_met_it(light, tmp_path: Path):
    jobs = _jobs(light, tmp_path)
    (tmp_path / "taken").write_text("a file where run 1's figures should go")
    jobs[1] = FigureJob(jobs[1].state, jobs[1].dataset, tmp_path / "taken")
    for n in (1, 3):
        with pytest.raises(FileExistsError):
            draw_figures(jobs, processes=n, min_runs_per_process=1)


def test_execute_runs_draws_only_succeeded_runs(tmp_path: Path):
    fails = {"training": {"steps": 200, "lr": 10.0, "optimizer": "sgd"}, "noise": {"sigma": 0.0}}
    diverges = parse_run_spec({**SMALL, **fails, "data": {"n_points": 32, "dim": 2, "frequencies": [1.0]}})
    outcomes = execute_runs(
        [parse_run_spec(SMALL), diverges], [tmp_path / "a", tmp_path / "b"], figure_processes=1
    )
    assert [o.status for o in outcomes] == ["succeeded", "failed"]
    assert "figures/loss_curves.png" in outcomes[0].files
    assert not any(name.startswith("figures/") for name in outcomes[1].files)
    assert not (tmp_path / "b" / "figures").exists()


def test_gni_run_rejects_figure_processes_it_cannot_use(tmp_path: Path, capsys):
    spec = tmp_path / "run.yaml"
    spec.write_text("training: {steps: 2}\n")
    for bad, said in (("0", "expected at least 1, got 0"), ("two", "expected a whole number, got 'two'")):
        with pytest.raises(SystemExit):
            main(["run", str(spec), "--out", str(tmp_path / "x"), "--figure-processes", bad])
        assert said in capsys.readouterr().err
    args = ["run", str(spec), "--out", str(tmp_path / "x"), "--figure-processes", "2", "--no-figures"]
    assert main(args) == 2
    assert "--no-figures draws none" in capsys.readouterr().err


def _draw_in_a_daemon(jobs: list[FigureJob], answers) -> None:
    try:
        answers.put([sorted(files) for files in draw_figures(jobs, processes=2, min_runs_per_process=1)])
    except BaseException as error:  # reported to the test, which fails naming it
        answers.put(repr(error))


def test_a_daemonic_process_can_draw_with_children(light, tmp_path: Path):
    """A Celery prefork child is daemonic: multiprocessing would refuse it children, subprocess does not."""
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    jobs = _jobs(light, tmp_path)[:2]
    daemon = context.Process(target=_draw_in_a_daemon, args=(jobs, answers), daemon=True)
    daemon.start()
    drawn = answers.get(timeout=120)
    daemon.join(timeout=10)
    assert drawn == [sorted(["loss_curves.png", "loss_curves.svg", "layer_norms.png", "layer_norms.svg"])] * 2
