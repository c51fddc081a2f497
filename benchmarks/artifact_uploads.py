"""Time storing a batch's artifacts in an S3-compatible store, one upload at a time and several.

Writes ``--files`` files shaped like a run's (results.json, metrics.csv, model.safetensors and ten
figures: 13 files of 2–200 KB a run), then stores them with
:func:`gni_service.artifacts.store_artifacts` for each ``--threads`` value, alternating ``--rounds``
times, and prints seconds, files a second and the ratio to one thread. Each upload is two round
trips (the object, then its check), so the figure depends on the store's latency: give the
endpoint your workers use.

    .venv/bin/python benchmarks/artifact_uploads.py --endpoint http://127.0.0.1:8333 \\
        --access-key KEY --secret-key SECRET [--runs 40] [--threads 1,8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy.orm import Session

from gni_service.artifacts import ArtifactUpload, store_artifacts
from gni_service.settings import ServiceSettings
from gni_service.storage_s3 import S3ArtifactStore

# (name, size in bytes) of one run's files, as a 1-D sinusoid run of the reference network writes them.
RUN_FILES = [
    ("results.json", 6_000),
    ("metrics.csv", 40_000),
    ("spec.json", 2_000),
    ("model.safetensors", 200_000),
    *(
        (f"figures/{stem}.png", 60_000)
        for stem in ("loss_curves", "function", "spectrum", "dynamics", "norms")
    ),
    *(
        (f"figures/{stem}.svg", 90_000)
        for stem in ("loss_curves", "function", "spectrum", "dynamics", "norms")
    ),
]


def run_files(root: Path, runs: int) -> list[ArtifactUpload]:
    uploads = []
    for r in range(runs):
        for name, size in RUN_FILES:
            path = root / f"run-{r}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
            uploads.append(ArtifactUpload(path, name, "exp_bench", f"run_{r}"))
    return uploads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    settings = ServiceSettings.model_validate(
        {
            "artifact_store": "s3",
            "s3_endpoint_url": args.endpoint,
            "s3_access_key_id": args.access_key,
            "s3_secret_access_key": args.secret_key,
            "s3_region": args.region,
            "s3_bucket": f"gni-bench-{uuid.uuid4().hex[:8]}",
            "artifact_upload_threads": max(counts),
        }
    )
    store = S3ArtifactStore.from_settings(settings)
    times: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as scratch:
        uploads = run_files(Path(scratch), args.runs)
        store_artifacts(Session(), store, uploads[:2])  # the bucket made, the connections opened
        megabytes = sum(size for _, size in RUN_FILES) * args.runs / 1e6
        print(f"{len(uploads)} files of {args.runs} runs, {megabytes:.1f} MB")
        for _ in range(args.rounds):
            for threads in counts:
                start = time.perf_counter()
                store_artifacts(Session(), store, uploads, threads=threads)
                seconds = time.perf_counter() - start
                times[threads].append(seconds)
                print(f"  {threads:3d} thread(s): {seconds:7.2f} s, {len(uploads) / seconds:7.1f} files/s")
    medians = {n: statistics.median(t) for n, t in times.items()}
    base = medians[counts[0]]
    print("median: " + ", ".join(f"{n} thread(s) {m:.2f} s ({base / m:.2f}×)" for n, m in medians.items()))
    print(
        json.dumps(
            {
                "files": len(uploads),
                "seconds": times,
                "endpoint": args.endpoint,
                "machine": platform.machine(),
                "cores": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
        )
    )


if __name__ == "__main__":
    main()
