"""``summary.md`` of a preset: settings, machine, and the claims table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gni_engine.presets.claims import Claim

MARK = {"holds": "✅ holds", "does not hold": "❌ does not hold", "inconclusive": "❔ inconclusive"}


def render_summary(name: str, results: dict[str, Any], claims: Sequence[Claim]) -> str:
    """Markdown: what ran, where, and each claim next to its measured number and verdict."""
    scale = results["scale"]
    m = results["machine"]
    sizes = (
        "the paper's settings"
        if scale["paper_settings"]
        else f"scaled down (steps={scale['steps'] or 'paper'}, seeds={scale['seeds'] or 'paper'}"
        + (f", overrides {scale['overrides']}" if scale.get("overrides") else "")
        + ")"
    )
    runs = results["runs"]
    failed = [r for r in runs if r["status"] != "succeeded"]
    lines = [
        f"# Preset `{name}`",
        "",
        f"- Settings: {sizes}; {len(runs)} runs ({len(failed)} not succeeded).",
        f"- Machine: {m['device']}, torch {m['torch']}, {m['cpu_threads']} CPU threads; "
        f"wall time {results['wall_time_s']:.0f} s.",
        "- Verdicts say whether a claim holds **at this scale**; "
        "scaled-down runs may not reach the paper's regime.",
        "",
        "| Claim | Paper | Measured here | Verdict |",
        "|---|---|---|---|",
    ]
    for c in claims:
        fig = f" ([figure]({c.figure}))" if c.figure else ""
        lines.append(
            f"| {_cell(c.claim)}{fig} | {_cell(c.paper)} | {_cell(c.measured)} | {MARK[c.verdict]} |"
        )
    if not claims:
        lines.append("| (no claim could be measured: see failed runs) | | | |")
    lines.extend(f"\n- Run `{r['variant']}/{r['run']}` {r['status']}: {r['error']}" for r in failed)
    lines += ["", "## Figures", ""]
    for variant, files in results["figures"].items():
        lines += [
            f"- {variant}: " + ", ".join(f"[{f.split('/')[-1]}]({f})" for f in files if f.endswith(".png"))
        ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
