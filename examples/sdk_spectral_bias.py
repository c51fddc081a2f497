"""Reproduce the spectral-bias figure through the SDK: baseline vs GNI on a mixture of sinusoids.

Start a server (``gni serve``), then ``python examples/sdk_spectral_bias.py --steps 2000 --out figs``.
The service trains both arms (stacked), then this script downloads the figures, among them the
spectral dynamics of baseline and GNI side by side (the same sweep as ``--preset spectral-bias``).
"""

import argparse

from gni_client import Client, run_spec

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--out", default="spectral-bias-figures")
args = parser.parse_args()

spec = run_spec(
    task="regression",
    data={"name": "sinusoids", "n_points": 200, "frequencies": [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]},
    model={"hidden": [64, 64, 64]},
    noise={"sigma": 0.1},
    training={"steps": args.steps, "lr": 1e-3},
    analyses={"record_every": max(args.steps // 20, 1), "noise_gap_samples": 8},
)
with Client() as client:  # GNI_BASE_URL, default http://127.0.0.1:8000
    experiment = client.experiments.create(
        spec=spec, sweep={"training.mode": ["baseline", "gni"]}, name="spectral-bias"
    )
    experiment = client.experiments.wait(experiment.id)
    paths = client.artifacts.download_all(experiment.id, to=args.out, kind="figure")
    print(f"{experiment.status}: {len(paths)} figures in {args.out}, e.g.")
    print("\n".join(str(p) for p in paths if "spectral_dynamics" in p.name))
