"""`faust worker` processes as children: started, waited for, killed or stopped by their own pid.

Used by `payments run`, the integration tests and the benchmark, so all three run the same command.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.local_kafka import PROJECT_ROOT, free_port
from devtools.processes import ChildSignals, die_with_parent, stop_process
from payments_app.exits import EXIT_FOR_RESTART

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def new_admin_token() -> str:
    """A fresh admin token for a local cluster (the workers get it as PAYMENTS_ADMIN_TOKEN)."""
    return secrets.token_urlsafe(32)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class WorkerProcess(ChildSignals):
    """One `faust -A payments_app.worker worker` process with its own data folder, client and internal ports;
    `kill` (a crash, with no chance to flush or commit), `pause` and `resume` signal it."""

    broker_url: str
    data_dir: Path
    web_port: int
    admin_token: str
    partitions: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    internal_port: int = field(default_factory=free_port)
    #: the module `faust -A` loads: the product's worker, or a test's variant of it
    app_module: str = "payments_app.worker"
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def internal_url(self) -> str:
        """Worker-to-worker routes and /metrics (`web.internal`)."""
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        return bearer(self.admin_token)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "worker.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "faust", "-A", self.app_module, "-L", "uvloop", "-l", "info",
            "worker",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BROKER_URL=self.broker_url,
            PAYMENTS_DATA_DIR=str(self.data_dir),
            PAYMENTS_PARTITIONS=str(self.partitions),
            PAYMENTS_WEB_PORT=str(self.web_port),
            PAYMENTS_INTERNAL_PORT=str(self.internal_port),
            PAYMENTS_ADVERTISED_HOST="127.0.0.1",
            PAYMENTS_ADMIN_TOKEN=self.admin_token,
            PYTHONPATH=str(PROJECT_ROOT),
            **self.extra_env,
        )
        return env

    def start(self, log_to_terminal: bool = False) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if log_to_terminal:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), cwd=PROJECT_ROOT, preexec_fn=die_with_parent
            )
            return self
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), cwd=PROJECT_ROOT,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            )  # fmt: skip
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> WorkerProcess:
        """Wait until /health answers ok; a worker that exits asking for a restart (its watchdog) is started again."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() == EXIT_FOR_RESTART:
                self.restart_if_exited()
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker on port {self.web_port} exited:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.3)
        raise RuntimeError(f"worker on port {self.web_port} not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def restart_if_exited(self) -> int | None:
        """Play the supervisor: start the worker again if it exited by itself; return its exit code then."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        with self.log_path.open("ab") as log:
            log.write(f"--- worker exited with code {code}; restarting it ---\n".encode())
        self.process = None
        self.start()
        return code

    def stop(self) -> None:
        """SIGTERM for a clean shutdown, SIGKILL if it does not finish in time."""
        proc, self.process = self.process, None
        stop_process(proc, STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40, problems: int = 40) -> str:
        """The worker's last warnings and errors (with tracebacks), then the last lines of its log."""
        if not self.log_path.exists():
            return "(no worker log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        flagged = [line for line in text if any(f"[{level}]" in line for level in ("WARNING", "ERROR", "CRITICAL"))]
        return "\n".join(["... warnings and errors:", *flagged[-problems:], "... last lines:", *text[-lines:]])
