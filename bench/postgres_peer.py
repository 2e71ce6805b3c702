"""The benchmark's peer: the same workload on a plain PostgreSQL ledger, the system a bank would otherwise use.

A number for the Kafka ledger means little alone, so one benchmark run also drives this peer: a fresh PostgreSQL
server (the machine's Debian binaries, started and stopped by us like the local Kafka broker) with an `accounts`
table and a `transfers` table. Every transfer is one durable SQL transaction (`fsync` and `synchronous_commit`
on): lock both accounts in id order, a guarded debit, the payee credit and the transfer row. The transaction is
one call of a PL/pgSQL function, so each transfer costs one round trip and the run measures PostgreSQL rather
than the Python client. The same generator (`pick_pair`, seed 1) picks payer, payee and amount; afterwards the
invariants are checked over the whole ledger in SQL, as the Kafka runs check theirs.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import shutil
import signal
import stat
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.common import (
    POLL_S,
    Progress,
    RunResult,
    RunSettings,
    account_names,
    opening_balances,
    percentile,
    pick_pair,
    process_usage,
)
from devtools.local_kafka import free_port
from devtools.processes import die_with_parent, stop_process

PG_LIB = Path("/usr/lib/postgresql")
PG_USER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SOCKET_PATH_MAX = 100  # a unix socket path must fit in sun_path (108 bytes), ".s.PGSQL.<port>" included
MAX_RETRIES = 100
MEMORY_SAMPLE_S = 1.0

DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "256MB",
}

SCHEMA = """
CREATE TABLE accounts (id text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0), opening bigint NOT NULL);
CREATE TABLE transfers (id text PRIMARY KEY, payer text, payee text, amount bigint, status text NOT NULL, reason text);
CREATE FUNCTION transfer(p_id text, p_payer text, p_payee text, p_amount bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    -- Both rows locked in id order: two transfers between the same accounts cannot deadlock.
    PERFORM 1 FROM accounts WHERE id IN (p_payer, p_payee) ORDER BY id FOR UPDATE;
    UPDATE accounts SET balance = balance - p_amount WHERE id = p_payer AND balance >= p_amount;
    IF NOT FOUND THEN
        INSERT INTO transfers VALUES (p_id, p_payer, p_payee, p_amount, 'rejected', 'insufficient_funds');
        RETURN 'rejected';
    END IF;
    UPDATE accounts SET balance = balance + p_amount WHERE id = p_payee;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transfer %: no account %', p_id, p_payee;
    END IF;
    INSERT INTO transfers VALUES (p_id, p_payer, p_payee, p_amount, 'applied', NULL);
    RETURN 'applied';
END
$$;
"""
TRANSFER_SQL = "SELECT transfer($1, $2, $3, $4)"
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


class PostgresSetupError(RuntimeError):
    """Raised when PostgreSQL cannot be found, installed, started or reached; the message says why."""


def find_bin_dir(install: bool = True) -> Path:
    """The newest `/usr/lib/postgresql/<version>/bin`; as root, install Debian's `postgresql` first if missing."""
    found = _installed_bin_dirs()
    if not found and install and os.geteuid() == 0:
        _apt_install_postgresql()
        found = _installed_bin_dirs()
    if not found:
        raise PostgresSetupError(
            f"no PostgreSQL server binaries under {PG_LIB}/*/bin: the benchmark's peer needs them "
            "(Debian: `apt-get install -y postgresql` as root)"
        )
    return found[-1]


def _installed_bin_dirs() -> list[Path]:
    dirs = [path.parent for path in PG_LIB.glob("*/bin/postgres") if path.parent.joinpath("initdb").exists()]
    return sorted(dirs, key=lambda path: [int(part) for part in path.parent.name.split(".") if part.isdigit()])


def _apt_install_postgresql() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    print("installing PostgreSQL: " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:  # a stale package index is the usual reason
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, check=False)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise PostgresSetupError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stderr[-3000:]}")


def _can_traverse(path: Path, uid: int, gids: list[int]) -> bool:
    """Whether a user with these ids may pass through the directory `path` (execute permission)."""
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


@dataclass
class PostgresServer:
    """One throwaway PostgreSQL server on 127.0.0.1: its data, socket and log live in `root`."""

    root: Path
    max_connections: int = 100
    settings: dict[str, str] = field(default_factory=dict)  # server settings on top of DEFAULT_SETTINGS
    port: int = 0
    bin_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    opened_dirs: list[Path] = field(default_factory=list, init=False)  # scratch ancestors we gave o+x

    def __post_init__(self) -> None:
        self.root = self.root.resolve()  # the server runs elsewhere: a relative socket directory would not exist

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def effective_settings(self) -> dict[str, str]:
        """Every `-c` setting the server runs with."""
        socket_dir = str(self.socket_dir) if len(f"{self.socket_dir}/.s.PGSQL.65535") <= SOCKET_PATH_MAX else ""
        return {
            **DEFAULT_SETTINGS,
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": socket_dir,  # empty (TCP only) when the scratch path is too long for one
            "max_connections": str(self.max_connections),
            **self.settings,
        }

    def start(self, timeout_s: float = START_TIMEOUT_S) -> PostgresServer:
        """initdb a fresh data dir, start `postgres`, wait until it accepts connections.

        Call it from a thread that lives as long as the server: the server gets SIGKILL when that thread exits.
        """
        if self.process is not None:
            raise PostgresSetupError("this PostgreSQL server is already running")
        self.bin_dir = self.bin_dir or find_bin_dir()
        self.port = self.port or free_port()
        run_as = self._prepare_dirs()
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(run_as, env)
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in self.effective_settings().items():
            cmd += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root, env=env,
                preexec_fn=die_with_parent, **run_as,
            )  # fmt: skip
        try:
            self._wait_ready(timeout_s)
        except PostgresSetupError as exc:
            self.stop()
            raise PostgresSetupError(f"{exc}\n--- postgres log tail ---\n{self.log_tail()}") from exc
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Fast shutdown, then immediate, then SIGKILL; by the postmaster's own pid, then any straggling child."""
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        # SIGINT is fast shutdown (SIGTERM would be "smart": wait for every client to leave); SIGQUIT is immediate
        # shutdown, which still removes its shared memory; a SIGKILLed postmaster would leave that behind.
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 5.0)):
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    continue
        stop_process(proc, 5.0)  # only if it is still running: SIGTERM, then SIGKILL
        for child in children:  # after a SIGKILL the backends would exit on their own, but not at once
            try:
                if child.is_running():
                    child.kill()
            except psutil.Error:
                continue

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no postgres log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu_s(self) -> float:
        """CPU seconds of the postmaster and all its children, living and exited."""
        assert self.pid is not None
        postmaster = psutil.Process(self.pid)
        times = postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in postmaster.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue
            total += child_times.user + child_times.system
        return total

    def pss_bytes(self) -> int:
        """Memory of the postmaster and its children now, as summed PSS (shared buffers counted once)."""
        assert self.pid is not None
        total = 0
        try:
            pids = [self.pid, *(child.pid for child in psutil.Process(self.pid).children(recursive=True))]
        except psutil.Error:
            return 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
            except OSError:
                continue
        return total

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _prepare_dirs(self) -> dict[str, Any]:
        """Create root and socket dir for the server's user; return the Popen arguments that run as that user.

        PostgreSQL refuses to run as root, so as root it runs as the `postgres` user, which must be able to
        reach the scratch folder: ancestors it cannot pass through get o+x (search only, not listing).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            return {}
        try:
            user = pwd.getpwnam(PG_USER)
        except KeyError as exc:
            raise PostgresSetupError(
                f"there is no `{PG_USER}` OS user to run PostgreSQL as (Debian: `apt-get install -y postgresql`)"
            ) from exc
        gids = os.getgrouplist(user.pw_name, user.pw_gid)
        for directory in reversed(self.root.parents):
            if not _can_traverse(directory, user.pw_uid, gids):
                directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
                self.opened_dirs.append(directory)
        for directory in (self.root, self.socket_dir):
            os.chown(directory, user.pw_uid, user.pw_gid)
            directory.chmod(0o700)
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _initdb(self, run_as: dict[str, Any], env: dict[str, str]) -> None:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER, "--auth=trust"]
        cmd += ["--encoding=UTF8", "--locale=C", "--no-sync"]  # a scratch cluster: skip the one-off fsync
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root, env=env,
                preexec_fn=die_with_parent, timeout=120, check=False, **run_as,
            )  # fmt: skip
        if result.returncode != 0:
            raise PostgresSetupError(f"initdb failed (exit {result.returncode}):\n{self.log_tail()}")

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.bin_dir is not None and self.process is not None
        deadline = time.monotonic() + timeout_s
        cmd = [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        cmd += ["-U", PG_USER, "-d", "postgres", "-t", "1"]
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresSetupError(f"postgres exited during start-up (exit {self.process.returncode})")
            if subprocess.run(cmd, capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresSetupError(f"PostgreSQL on 127.0.0.1:{self.port} did not accept connections in {timeout_s} s")


@dataclass
class SqlLoad:
    """What the clients did: counts, per-transfer latencies, and the decided-count timeline."""

    submitted_ids: list[str] = field(default_factory=list)
    applied: int = 0
    rejected: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    elapsed: float = 0.0
    peak_pss: int = 0


async def open_and_fund(conn: asyncpg.Connection, balances: dict[str, int]) -> None:
    """Create the schema and open every account with its opening balance (one COPY)."""
    await conn.execute(SCHEMA)
    await conn.copy_records_to_table(
        "accounts", records=[(a, b, b) for a, b in balances.items()], columns=["id", "balance", "opening"]
    )
    await conn.execute("ANALYZE accounts")


async def transfer(conn: asyncpg.Connection, tx_id: str, payer: str, payee: str, amount: int) -> tuple[str, int]:
    """One transfer as one transaction; retried on deadlock or serialization failure. Status and retries made."""
    for attempt in range(MAX_RETRIES + 1):
        try:
            return await conn.fetchval(TRANSFER_SQL, tx_id, payer, payee, amount), attempt
        except RETRYABLE:
            if attempt == MAX_RETRIES:
                raise
    raise AssertionError("unreachable")


async def drive_load(
    server: PostgresServer, clients: list[asyncpg.Connection], settings: RunSettings, accounts: list[str],
    progress: Progress,
) -> SqlLoad:  # fmt: skip
    """Every client runs transfers back to back for duration_s; the timeline is sampled every POLL_S."""
    rng = random.Random(1)
    load = SqlLoad()
    started = time.monotonic()
    stop_at = started + settings.duration_s

    async def client(conn: asyncpg.Connection) -> None:
        while time.monotonic() < stop_at:
            tx_id = f"t{len(load.submitted_ids) + 1}"
            payer, payee, amount = pick_pair(settings, rng, accounts)
            load.submitted_ids.append(tx_id)
            submitted_at = time.monotonic()
            status, retries = await transfer(conn, tx_id, payer, payee, amount)
            load.latencies.append(time.monotonic() - submitted_at)
            load.retries += retries
            if status == "applied":
                load.applied += 1
            else:
                load.rejected += 1

    async def sample_memory() -> None:
        while True:
            load.peak_pss = max(load.peak_pss, await asyncio.to_thread(server.pss_bytes))
            await asyncio.sleep(MEMORY_SAMPLE_S)

    tasks = [asyncio.create_task(client(conn)) for conn in clients]
    sampler = asyncio.create_task(sample_memory())
    try:
        while True:
            now = time.monotonic()
            decided = load.applied + load.rejected
            load.timeline.append((now - started, decided))
            elapsed = now - started
            progress.show(f"load {elapsed:5.1f}/{settings.duration_s:.0f} s, submitted {len(load.submitted_ids)}, "
                          f"decided {decided} ({decided / elapsed if elapsed > 0 else 0:,.0f}/s)")  # fmt: skip
            if all(task.done() for task in tasks):
                break
            for task in tasks:
                if task.done():
                    task.result()  # a client that failed ends the run with its error
            await asyncio.sleep(POLL_S)
        for task in tasks:
            task.result()
    finally:
        for task in [*tasks, sampler]:
            task.cancel()
        await asyncio.gather(*tasks, sampler, return_exceptions=True)
    load.elapsed = time.monotonic() - started
    load.peak_pss = max(load.peak_pss, server.pss_bytes())
    return load


async def check_ledger(conn: asyncpg.Connection, settings: RunSettings, load: SqlLoad) -> list[str]:
    """Every invariant the ledger must keep, checked in SQL; one readable line per failure."""
    problems: list[str] = []
    count, total = await conn.fetchrow("SELECT count(*), coalesce(sum(balance), 0) FROM accounts")
    expected = sum(opening_balances(settings, account_names(settings)).values())
    if count != settings.accounts or total != expected:
        problems.append(f"sum of balances {total:,} over {count} accounts != the {settings.accounts} accounts' "
                        f"opening balances {expected:,}")  # fmt: skip
    negative = await conn.fetchval("SELECT count(*) FROM accounts WHERE balance < 0")
    if negative:
        problems.append(f"{negative} accounts have a negative balance")
    submitted = len(load.submitted_ids)
    rows, known, applied, rejected, odd = await conn.fetchrow(
        """SELECT count(*), count(*) FILTER (WHERE id = ANY($1::text[])),
                  count(*) FILTER (WHERE status = 'applied'),
                  count(*) FILTER (WHERE status = 'rejected' AND reason = 'insufficient_funds'),
                  count(*) FILTER (WHERE status NOT IN ('applied', 'rejected')
                                      OR (status = 'rejected' AND reason IS DISTINCT FROM 'insufficient_funds'))
           FROM transfers""",
        load.submitted_ids,
    )
    if rows != submitted or known != submitted or len(set(load.submitted_ids)) != submitted:
        problems.append(f"{submitted} transfers submitted but the transfers table has {rows} rows, "
                        f"{known} of them for submitted ids")  # fmt: skip
    if odd:
        problems.append(f"{odd} transfer rows are neither applied nor rejected for insufficient funds")
    if applied + rejected != submitted or applied != load.applied or rejected != load.rejected:
        problems.append(f"transfers table says {applied} applied / {rejected} rejected, the clients were told "
                        f"{load.applied} / {load.rejected} of {submitted}")  # fmt: skip
    mismatched = await conn.fetch(
        """SELECT a.id, a.balance, a.opening + coalesce(c.credits, 0) - coalesce(d.debits, 0) AS expected
           FROM accounts a
           LEFT JOIN (SELECT payee AS id, sum(amount) AS credits FROM transfers WHERE status = 'applied'
                      GROUP BY payee) c USING (id)
           LEFT JOIN (SELECT payer AS id, sum(amount) AS debits FROM transfers WHERE status = 'applied'
                      GROUP BY payer) d USING (id)
           WHERE a.balance <> a.opening + coalesce(c.credits, 0) - coalesce(d.debits, 0)
           ORDER BY a.id"""
    )
    if mismatched:
        examples = ", ".join(
            f"{r['id']} has {r['balance']:,} but transfers say {r['expected']:,}" for r in mismatched[:5]
        )
        problems.append(f"{len(mismatched)} account balances differ from opening + applied credits - applied "
                        f"debits: {examples}")  # fmt: skip
    return problems


async def run_postgres(
    settings: RunSettings,
    scratch: Path,
    *,
    server_settings: dict[str, str] | None = None,
    pace_us: float = float("nan"),
) -> RunResult:
    """One run of the workload against a fresh PostgreSQL server in `scratch`, invariants checked afterwards.

    Clients: `settings.in_flight_batches` connections, each running one transfer at a time. CPU for "postgres"
    is the postmaster plus all its children; its memory is the peak of the summed PSS sampled every second
    (summing each backend's peak RSS would count shared buffers once per backend). `server_settings` override
    DEFAULT_SETTINGS, e.g. {"synchronous_commit": "off"} for a ledger that, like the broker, does not fsync per commit.
    `pace_us` is the machine's pace measured just before (`bench.pace`).
    """
    label = f"postgres/{settings.workload}/{settings.workers}w/sql"
    progress = Progress(label)
    client_count = settings.in_flight_batches
    server = PostgresServer(
        scratch / f"postgres-{uuid.uuid4().hex[:8]}",
        max_connections=client_count + 10,
        settings=dict(server_settings or {}),
    )
    progress.show(f"starting PostgreSQL in {server.root}")
    server.start()  # in this thread, which outlives the server (PDEATHSIG follows the starting thread)
    clients: list[asyncpg.Connection] = []
    try:
        admin = await asyncpg.connect(server.dsn)
        try:
            accounts = account_names(settings)
            progress.show(f"opening {len(accounts)} accounts")
            await open_and_fund(admin, opening_balances(settings, accounts))
            clients = list(await asyncio.gather(*(asyncpg.connect(server.dsn) for _ in range(client_count))))
            # CPU is counted over the load only, as for the Kafka runs (not the COPY or the checks)
            postgres_before, (generator_before, _) = server.cpu_s(), process_usage({"load-generator": os.getpid()})
            load = await drive_load(server, clients, settings, accounts, progress)
            postgres_cpu = server.cpu_s() - postgres_before
            generator_cpu = process_usage({"load-generator": os.getpid()})[0]["load-generator"]
            generator_cpu -= generator_before["load-generator"]
            if settings.forge_credit:
                await admin.execute("UPDATE accounts SET balance = balance + 1 WHERE id = $1", accounts[0])
            progress.show("checking the invariants")
            problems = await check_ledger(admin, settings, load)
            version = await admin.fetchval("SHOW server_version")
        finally:
            await asyncio.gather(*(conn.close() for conn in [*clients, admin]), return_exceptions=True)
        postgres_settings = server.effective_settings()
    finally:
        server.stop()
    if not problems:
        shutil.rmtree(server.data_dir, ignore_errors=True)  # keep a broken ledger's data for a look
    _, rss = process_usage({"load-generator": os.getpid()})
    latencies_ms = [1000 * value for value in load.latencies]
    decided_in_window = [n for t, n in load.timeline if t <= settings.duration_s]
    result = RunResult(
        model="postgres", workload=settings.workload, workers=settings.workers, path="sql",
        duration_s=round(load.elapsed, 2), submitted=len(load.submitted_ids), applied=load.applied,
        rejected=load.rejected,
        applied_tps=round((decided_in_window[-1] if decided_in_window else 0) / settings.duration_s, 1),
        p50_ms=round(percentile(latencies_ms, 0.50), 1), p95_ms=round(percentile(latencies_ms, 0.95), 1),
        p99_ms=round(percentile(latencies_ms, 0.99), 1), segment_moves=0, invariants_ok=not problems,
        problems=problems, cpu_s={"postgres": round(postgres_cpu, 2), "load-generator": round(generator_cpu, 2)},
        peak_rss_mb={"postgres": round(load.peak_pss / 2**20, 1), **rss},
        timeline=[(round(t, 2), n) for t, n in load.timeline], pace_us=pace_us,
        settings={
            **asdict(settings),
            "model": "postgres",
            "path": "sql",
            "postgres": {"version": version, "clients": client_count, "isolation": "read committed",
                         "transfer": "one PL/pgSQL call per transfer: lock both rows in id order, guarded debit, "
                                     "credit, transfer row", "server": postgres_settings},
            "retries": load.retries,
            "postgres_memory": "peak of summed PSS of the postmaster and its children, sampled every second",
        },
    )  # fmt: skip
    progress.done(f"{result.applied_tps:,.0f} applied/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
                  f"invariants {'ok' if result.invariants_ok else 'FAILED'}")  # fmt: skip
    return result
