"""A TCP relay adding latency: ``python tests/faults/relay.py LISTEN PORT TARGET TARGET_PORT DELAY``.

Listens on ``LISTEN:PORT`` and connects each client to ``TARGET:TARGET_PORT`` (run it on the
server's own host, ``ip netns exec``: that hop is the host's loopback); every chunk read from either side is
written to the other ``DELAY`` seconds after it was read, in order. A round trip through it takes
``2 * DELAY`` more. This kernel has no ``tc netem`` (see tests/faults/network.py), so latency
between the test hosts is made here, in user space. A standalone program: it imports nothing of
django_tq or the tests.
"""

from __future__ import annotations

import asyncio
import sys
import time

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived, in order."""
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while chunk := await reader.read(CHUNK):
            due.put_nowait((time.monotonic() + delay, chunk))
        due.put_nowait((time.monotonic() + delay, b""))  # end of stream, delayed like the data

    reading = asyncio.create_task(read())
    try:
        while True:
            at, chunk = await due.get()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    finally:
        reading.cancel()


async def _serve_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    pipes = [
        asyncio.create_task(_pipe(client_reader, server_writer, delay)),
        asyncio.create_task(_pipe(server_reader, client_writer, delay)),
    ]
    try:
        # a reset on either side ends both directions (the peer sees the connection drop)
        done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        if any(task.exception() for task in done if not task.cancelled()):
            raise ConnectionError
        await asyncio.gather(*pipes)
    except (OSError, ConnectionError):
        pass
    finally:
        for task in pipes:
            task.cancel()
        for writer in (client_writer, server_writer):
            writer.close()


async def main(listen: str, port: int, target: str, target_port: int, delay: float) -> None:
    """Relay connections until killed."""
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, (target, target_port), delay), listen, port
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, port, target, target_port, seconds = sys.argv[1:6]
    asyncio.run(main(listen, int(port), target, int(target_port), float(seconds)))
