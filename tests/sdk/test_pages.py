"""The SDK follows an experiment's artifact pages to the last one, sync and async."""

from __future__ import annotations

import asyncio

import httpx
from gni_client import AsyncClient, Client


def pages_of(total: int, size: int):
    """A MockTransport handler serving ``total`` artifacts ``size`` a page, and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        start = int(request.url.params.get("cursor", "0"))
        items = [
            {
                "id": f"art_{i}",
                "experiment_id": "exp_1",
                "run_id": None if i < 2 else f"run_{i}",
                "kind": kind,
            }
            for i in range(start, min(start + size, total))
            for kind in ["figure" if i % 2 else "weights"]
        ]
        following = start + size if start + size < total else None
        return httpx.Response(
            200, json={"items": items, "next_cursor": None if following is None else str(following)}
        )

    return handler, seen


def test_list_follows_next_cursor_to_the_last_page():
    handler, seen = pages_of(total=7, size=3)
    client = Client(base_url="http://gni.test", transport=httpx.MockTransport(handler))
    listed = client.artifacts.list(experiment_id="exp_1", include_runs=True)
    assert [a.id for a in listed] == [f"art_{i}" for i in range(7)]
    assert [r.url.params.get("cursor") for r in seen] == [None, "3", "6"]
    assert all(r.url.params["include_runs"] == "true" for r in seen)
    figures = client.artifacts.list(experiment_id="exp_1", include_runs=True, kind="figure")
    assert [a.id for a in figures] == ["art_1", "art_3", "art_5"]  # filtered across pages


def test_async_list_follows_next_cursor_too():
    handler, seen = pages_of(total=4, size=2)

    async def listed() -> list[str]:
        async with AsyncClient(base_url="http://gni.test", transport=httpx.MockTransport(handler)) as client:
            return [a.id for a in await client.artifacts.list(experiment_id="exp_1")]

    assert asyncio.run(listed()) == ["art_0", "art_1", "art_2", "art_3"] and len(seen) == 2
