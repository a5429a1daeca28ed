"""A TCP proxy for testing the gateway's uplink: a rate limit, and a cloud that misbehaves.

Between the gateway and a real ``cloudfilm serve``: ``rate`` caps bytes per second in each
direction (a hospital's 100 Mbit/s uplink on loopback); ``fail_next(n)`` makes the next ``n``
HTTP requests get a 500 after their whole body was read (as a failing cloud answers, so the
client sees the status, not a reset); ``down()`` / ``up()`` refuse connections and cut the
open ones, as a cloud that went away. Counts bytes passed upstream (what the link carried).
Runs its own event loop in a thread; used by ``bench/gateway.py`` and ``tests/gateway/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time


class NetProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        rate: float | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.tls = tls
        """Terminate TLS here (the cloud's HTTPS front, with its certificate)."""
        self.rate = rate
        """Bytes per second per direction (None: unlimited)."""
        self.upstream_bytes = 0
        self.failures_left = 0
        self.fail_status = 500
        self.requests_failed = 0
        self.is_down = False
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls)
        )
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        def stop() -> None:
            if self.server is not None:
                self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(timeout=10)

    # -- control, from any thread -----------------------------------------------------------
    def fail_next(self, n: int, status: int = 500) -> None:
        self.failures_left, self.fail_status = n, status

    def down(self) -> None:
        def cut() -> None:
            self.is_down = True
            for w in list(self.writers):
                w.transport.abort()

        self.loop.call_soon_threadsafe(cut)

    def up(self) -> None:
        self.is_down = False

    # -- per connection --------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_down:
            writer.transport.abort()
            return
        self.writers.add(writer)
        try:
            if self.failures_left > 0:
                self.failures_left -= 1
                await self._fail(reader, writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self.writers.add(up_writer)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer, count=True),
                    self._pipe(up_reader, writer, count=False),
                )
            finally:
                self.writers.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self.writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        started = time.monotonic()
        passed = 0
        try:
            while chunk := await reader.read(64 * 1024):
                if self.rate:
                    passed += len(chunk)
                    ahead = passed / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if count:
                    self.upstream_bytes += len(chunk)
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    async def _fail(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one whole request (Content-Length or chunked), answer it with an error."""
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n"))
        }
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        body = b'{"title": "injected failure", "status": %d}' % self.fail_status
        writer.write(
            b"HTTP/1.1 %d Injected\r\nContent-Type: application/problem+json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (self.fail_status, len(body), body)
        )
        await writer.drain()
        self.requests_failed += 1
