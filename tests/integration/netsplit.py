"""A TCP proxy in front of the broker that can cut the network between its clients and the broker, then heal it.

A worker whose every Kafka connection goes through the proxy (see LocalKafka.split_advertised_port) keeps running
while cut off, which SIGKILL and SIGSTOP cannot show. The cut is a blackhole, not a refusal: no byte is
forwarded either way and no socket is closed or reset, so each side sees only silence, as when a network drops
packets. What was sent meanwhile is held and delivered at the heal, as TCP would retransmit it once the path is
back; a connection either side closed meanwhile closes at the heal too. A connection opened during the cut never
reaches the broker and is closed at the heal: over a dropped network its connect would have timed out.

The proxy runs its own event loop in its own thread, so it keeps forwarding while the test blocks (for example
in `AppCluster.wait_ready`); `stop()` closes every socket and joins the thread, so nothing outlives the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

CHUNK_BYTES = 65_536
CONTROL_TIMEOUT_S = 10.0


class NetSplit:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`; `cut()` and `heal()` drop and restore the network."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"netsplit-{port}", daemon=True)
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # one per connection, with its two pumps
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> NetSplit:
        self._thread.start()
        try:
            self._run(self._start())
        except BaseException:
            self.stop()
            raise
        return self

    def cut(self) -> None:
        """From now on nothing passes either way, and nothing is closed."""
        self._run(self._set_open(False))

    def heal(self) -> None:
        """Forward again, held bytes first; connections opened during the cut are closed."""
        self._run(self._set_open(True))

    def stop(self) -> None:
        """Close the listener and every connection, then end the proxy's thread."""
        if self._thread.is_alive():
            self._run(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CONTROL_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> NetSplit:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine on the proxy's loop and wait for it, so a `cut()` holds by the time it returns."""
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CONTROL_TIMEOUT_S)

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _set_open(self, is_open: bool) -> None:
        if is_open:
            self._open.set()
        else:
            self._open.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_writer)
        try:
            if not self._open.is_set():
                await self._open.wait()
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return
            self._writers.add(upstream_writer)
            try:
                await asyncio.gather(
                    self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer)
                )
            finally:
                self._writers.discard(upstream_writer)
                upstream_writer.close()
        finally:
            self._tasks.discard(task)
            self._writers.discard(client_writer)
            client_writer.close()

    async def _pump(self, source: asyncio.StreamReader, destination: asyncio.StreamWriter) -> None:
        """Copy one direction; whatever arrives during a cut (bytes, or the end of the stream) waits for the heal."""
        try:
            while True:
                try:
                    data = await source.read(CHUNK_BYTES)
                except OSError:
                    data = b""
                await self._open.wait()
                if not data:
                    return
                destination.write(data)
                await destination.drain()
        except OSError:
            return
        finally:
            destination.close()
