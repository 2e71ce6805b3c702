"""Child processes that cannot outlive the process that started them (Linux: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in the child before exec: the kernel sends it SIGKILL when its parent exits, however it exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM for a clean shutdown, SIGKILL if it has not exited within `timeout_s`; by the process's own pid."""
    stop_processes([proc], timeout_s)


def stop_processes(procs: list[subprocess.Popen[bytes] | None], timeout_s: float) -> None:
    """`stop_process` for several at once: each gets SIGTERM before any is waited for (the nodes of a Kafka
    cluster shut down cleanly only while their quorum is still up)."""
    running = [proc for proc in procs if proc is not None and proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


class ChildSignals:
    """SIGKILL, SIGSTOP and SIGCONT for a class that keeps the child it started in `process`."""

    process: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        """SIGKILL: the child dies with no chance to flush or shut down cleanly."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the child freezes (a long GC pause, a stalled VM) and keeps its sockets open, until `resume`."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
