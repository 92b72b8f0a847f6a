"""Child processes that end with the process that started them, even when that one is killed with SIGKILL and
has no chance to stop them: `recall serve`'s API processes and its redis-server would otherwise run on, orphaned,
holding the port and the data directory.

Linux's parent-death signal (prctl PR_SET_PDEATHSIG) does it. It fires when the *thread* that started the child
exits, so start such children from a thread that lives as long as they should (the main thread, or the thread
that runs the server). Elsewhere (macOS) these are no-ops, and a parent killed with SIGKILL leaves its children.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# Resolved once in the parent: a child between fork and exec (subprocess's preexec_fn) should only make the call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """In a child: receive `signum` when the parent exits; exit now if it already has (the signal would never
    come)."""
    if _prctl is None:
        return
    if _prctl(PR_SET_PDEATHSIG, signum) != 0:
        os._exit(1)  # a child that would outlive its parent unnoticed is worse than one that fails to start
    if os.getppid() != parent_pid:
        os._exit(1)


def child_setup(parent_pid: int) -> dict:
    """subprocess.Popen arguments that make the child end with this process: none where there is no such signal
    (a preexec_fn costs subprocess its fast path)."""
    return {} if _prctl is None else {"preexec_fn": lambda: end_with_parent(parent_pid)}
