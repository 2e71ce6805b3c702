"""Worker processes for integration tests: each test gets its own app id (topics, group, changelog)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from devtools.cluster import WorkerProcess, bearer, new_admin_token
from devtools.local_kafka import free_port
from payments_app.domain.routing import CONCURRENT

PARTITIONS = 4
#: every test cluster's admin token (each worker requires one); test sessions send it
ADMIN_TOKEN = new_admin_token()


def admin_session(**options: Any) -> aiohttp.ClientSession:
    """An HTTP client that calls as the admin."""
    return aiohttp.ClientSession(headers=bearer(ADMIN_TOKEN), **options)


class AppCluster:
    """Workers of one app on the shared broker; stopped by pid at the end of the test, logs kept for failures."""

    def __init__(
        self, broker_url: str, root: Path, partitions: int = PARTITIONS, model: str = CONCURRENT,
        extra_env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.broker_url = broker_url
        self.extra_env = extra_env or {}
        self.model = model
        self.root = root
        self.partitions = partitions
        self.app_id = f"pay-{uuid.uuid4().hex[:8]}"
        self.workers: list[WorkerProcess] = []
        self._supervising = False
        self._supervisor: threading.Thread | None = None

    def add_worker(self, broker_url: str | None = None, app_module: str = "payments_app.worker") -> WorkerProcess:
        """Start one more worker; a second one only once the first is ready, because the first creates the topics
        and a member that joins while they are being created can miss its partitions until the next rebalance.
        `broker_url` gives this worker another way to the same broker (a proxy that can cut it off); `app_module`
        is what it runs (a test's variant of the worker)."""
        if self.workers and self.workers[0].process is not None:
            self.workers[0].wait_ready()
        n = len(self.workers)
        worker = WorkerProcess(
            broker_url or self.broker_url, self.root / f"worker-{n}", free_port(), ADMIN_TOKEN, self.partitions,
            extra_env={
                "PAYMENTS_APP_ID": self.app_id,
                "PAYMENTS_MODEL": self.model,
                "PAYMENTS_AUDIT_INTERVAL_S": "2",
                "PAYMENTS_SESSION_TIMEOUT_S": "8",
                **self.extra_env,
            },
            app_module=app_module,
        )  # fmt: skip
        self.workers.append(worker)
        return worker.start()

    def restart(self, worker: WorkerProcess) -> WorkerProcess:
        worker.start()
        return worker

    def wait_ready(self) -> None:
        """Wait for every running worker, then supervise them as Kubernetes would."""
        for worker in self.workers:
            if worker.process is not None:
                worker.wait_ready()
        if not self._supervising:
            self.supervise()

    def running(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.process is not None]

    def stop(self) -> None:
        self._supervising = False
        if self._supervisor is not None:
            self._supervisor.join()
        for worker in self.workers:
            worker.stop()

    def supervise(self) -> None:
        """Restart workers that exit by themselves, as Kubernetes would (a worker killed by the test stays down)."""
        self._supervising = True

        def loop() -> None:
            while self._supervising:
                for worker in list(self.workers):
                    worker.restart_if_exited()
                time.sleep(0.5)

        self._supervisor = threading.Thread(target=loop, daemon=True)
        self._supervisor.start()

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.web_port} log tail ---\n{w.log_tail()}" for w in self.workers)


@contextmanager
def running_cluster(
    broker_url: str, root: Path, workers: int = 2, model: str = CONCURRENT, extra_env: dict[str, str] | None = None
) -> Iterator[AppCluster]:
    """A ready cluster for a whole test module, stopped afterwards; its logs are printed if it fails."""
    cluster = AppCluster(broker_url, root, model=model, extra_env=extra_env)
    try:
        for _ in range(workers):
            cluster.add_worker()
        cluster.wait_ready()
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


RETRY_FOR_S = 90.0


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, retry_for_s: float = RETRY_FOR_S
) -> tuple[int, Any]:
    """One HTTP call; while a worker is restarting (refused, disconnected, or 503 while it restores), try again."""
    deadline = time.monotonic() + retry_for_s
    while True:
        try:
            async with session.request(method, url, json=body) as response:
                payload = await response.json(content_type=None)
                if response.status != 503 or time.monotonic() > deadline:
                    return response.status, payload
        except aiohttp.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def wait_for(predicate: Any, timeout_s: float = 60.0, pause_s: float = 0.2) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s (last result {result!r})")
        await asyncio.sleep(pause_s)


async def settled_account(session: aiohttp.ClientSession, url: str, account: str) -> dict:
    """The account once none of its money moves between its segments: a collection round marks a payer short,
    and the reconciler may then even out its segments, so its `balance` (the segments') leaves out what is
    `in_flight` for a moment."""

    async def still() -> dict | None:
        status, body = await call(session, "GET", f"{url}/accounts/{account}")
        return body if status == 200 and body["in_flight"] == 0 else None

    return await wait_for(still)


async def settled(session: aiohttp.ClientSession, url: str, tx_id: str) -> dict:
    """The transaction's record once it is no longer pending."""

    async def decided() -> dict | None:
        status, body = await call(session, "GET", f"{url}/transactions/{tx_id}")
        return body if status == 200 and body["status"] != "pending" else None

    return await wait_for(decided)
