"""reuse_results through the SDK (sync, async) and ``gni submit --reuse-results``, on the real app."""

from __future__ import annotations

import json

import pytest
from gni_client import AsyncClient
from gni_client.cli import build_parser, handle_submit


def test_create_reuses_a_trained_result_and_says_where_it_came_from(client, tiny_spec):
    trained = client.experiments.create(spec=tiny_spec, sweep={"seed": [0]})
    client.experiments.wait(trained.id, timeout=120, poll_interval=0.2, progress=False)
    [source] = client.runs.list(trained.id)

    reused = client.experiments.create(spec=tiny_spec, sweep={"seed": [0, 1]}, reuse_results=True)
    assert reused.counts.succeeded == 1 and reused.counts.queued == 1
    first, second = client.runs.list(reused.id)
    assert (first.status, first.reused_from, first.summary) == ("succeeded", source.id, source.summary)
    assert second.reused_from is None
    again = client.experiments.create(spec=tiny_spec, sweep={"seed": [0]})  # the default trains
    assert again.counts.queued == 1 and again.figures_state == "pending"


@pytest.mark.anyio
async def test_async_create_takes_reuse_results(async_client: AsyncClient, tiny_spec):
    async with async_client as sdk:
        trained = await sdk.experiments.create(spec=tiny_spec)
        await sdk.experiments.wait(trained.id, timeout=120, poll_interval=0.2, progress=False)
        reused = await sdk.experiments.create(spec=tiny_spec, reuse_results=True)
        assert reused.status == "succeeded" and reused.counts.succeeded == 1
        [run] = [r async for r in sdk.runs.list(reused.id)]
        [source] = [r async for r in sdk.runs.list(trained.id)]
        assert run.reused_from == source.id


def test_submit_reuse_results_on_the_command_line(client, tiny_spec, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec))
    args = build_parser().parse_args(["submit", str(spec), "--wait", "--json"])
    assert handle_submit(args, client) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    args = build_parser().parse_args(["submit", str(spec), "--reuse-results"])
    assert handle_submit(args, client) == 0
    out = capsys.readouterr().out
    assert "reused: 1 runs already trained with the same spec" in out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
