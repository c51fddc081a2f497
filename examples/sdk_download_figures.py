"""Download every figure of an experiment: its comparison figures and each run's.

``python examples/sdk_download_figures.py EXPERIMENT_ID --to figures/``
"""

import argparse

from gni_client import Client

parser = argparse.ArgumentParser()
parser.add_argument("experiment_id")
parser.add_argument("--to", default="figures")
args = parser.parse_args()

with Client() as client:
    paths = client.artifacts.download_all(args.experiment_id, to=args.to, kind="figure")
for path in paths:
    print(path)
print(f"{len(paths)} figures in {args.to} (runs' figures under runs/<run id>/)")
