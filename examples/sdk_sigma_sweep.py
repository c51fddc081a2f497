"""A σ sweep through the SDK, summarised as the table a paper needs (mean ± stderr over seeds).

Start a server (``gni serve``), then ``python examples/sdk_sigma_sweep.py --steps 1000``.
"""

import argparse

from gni_client import Client, run_spec

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=1000)
parser.add_argument("--seeds", type=int, default=3)
args = parser.parse_args()

spec = run_spec(
    data={"n_points": 64, "frequencies": [1.0, 3.0, 5.0]},
    model={"hidden": [32, 32]},
    training={"steps": args.steps, "lr": 1e-2},
    analyses={"record_every": max(args.steps // 10, 1), "noise_gap_samples": 8},
)
axes = {"noise.sigma": [0.0, 0.1, 0.3], "seed": list(range(args.seeds))}
with Client() as client:
    experiment = client.experiments.create(spec=spec, sweep=axes, name="sigma-sweep")
    experiment = client.experiments.wait(experiment.id)
    table = client.experiments.aggregate(
        experiment.id, group_by="noise.sigma", metric=["summary.train_loss", "summary.R_total"]
    )
    try:
        print(table.to_pandas().to_string(index=False))
    except ImportError:  # no pandas: the rows are plain dicts
        for row in table.rows():
            print(row)
