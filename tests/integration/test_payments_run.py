"""`payments run` (what `make run` calls) prints the admin token, keeps it for the README's examples, and the API
accepts it; without a token the API refuses. Ctrl-C (SIGTERM) stops it without a crash."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from devtools.cluster import bearer
from devtools.local_kafka import PROJECT_ROOT, free_port
from devtools.processes import die_with_parent, stop_process
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.broker


def post(url: str, body: dict, headers: dict[str, str]) -> int | None:
    """The answer's status; None while nothing listens yet or the worker answers that it is starting."""
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return None if refused.code == 503 else refused.code
    except OSError:
        return None


async def test_payments_run_prints_and_keeps_the_admin_token(broker_url: str, tmp_path: Path) -> None:
    web_port = free_port()
    env = {**os.environ, "BROKER_URL": broker_url, "PAYMENTS_APP_ID": f"run-{web_port}", "PAYMENTS_PARTITIONS": "2"}
    env.pop("PAYMENTS_ADMIN_TOKEN", None)
    command = [sys.executable, "-m", "devtools.cli", "run", "--data-dir", str(tmp_path),
               "--web-port", str(web_port), "--internal-port", str(free_port())]  # fmt: skip
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=die_with_parent)  # fmt: skip
    try:
        token_file = tmp_path / "admin-token"

        async def printed() -> bool:
            return "the admin token" in (tmp_path / "run.log").read_text(errors="replace")

        await wait_for(printed, timeout_s=30)
        token = token_file.read_text().strip()
        assert f"the admin token (also in {token_file}): {token}" in (tmp_path / "run.log").read_text()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32

        url = f"http://127.0.0.1:{web_port}/accounts"

        async def answered() -> int | None:
            return post(url, {"id": "run-alice"}, bearer(token))

        assert await wait_for(answered, timeout_s=90, pause_s=0.5) == 201
        assert post(url, {"id": "run-bob"}, {}) == 401
        stop_process(process, timeout_s=30)
        assert "Crashed" not in (tmp_path / "run.log").read_text(errors="replace"), "a clean stop crashed a service"
    except BaseException:
        print((tmp_path / "run.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        stop_process(process, timeout_s=30)
        log.close()
