"""A TCP proxy on loopback that delays every chunk it forwards: a far store, for benchmarks.

Each direction waits ``--delay-ms`` before passing a chunk on (a request and its answer: twice that,
as a round trip to a store in another zone or region). Chunks keep their order, and a chunk's wait
overlaps the ones behind it, as on a real link.

    .venv/bin/python benchmarks/latency_proxy.py --listen 18334 --target 127.0.0.1:18333 --delay-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    delivery = asyncio.create_task(deliver())
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            queue.put_nowait((loop.time() + delay_s, chunk))
    queue.put_nowait((loop.time(), b""))
    await delivery


async def serve(listen: int, host: str, port: int, delay_s: float) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            pipe(client_reader, server_writer, delay_s), pipe(server_reader, client_writer, delay_s)
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, default=10.0)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    asyncio.run(serve(args.listen, host, int(port), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
