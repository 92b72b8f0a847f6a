"""Several API processes on one port, each with its own listening socket (SO_REUSEPORT), so that the kernel
spreads connections over them.

uvicorn's own `--workers` shares one socket among its processes, and an asyncio loop that wakes on it accepts
every pending connection at once: under 32 keep-alive clients one of two processes took all the connections in 3
of 10 load windows, and the service answered at one process's rate (951 against 1,660 requests/s,
BENCHMARKS.md). With a socket per process, the kernel hashes each new connection to one of them.

The parent supervises: a process that dies is replaced, one that fails to start stops them all (as uvicorn's
own supervisor does: it would fail the same way again), and SIGINT or SIGTERM stops them all, each finishing the
requests it has (uvicorn's graceful shutdown) within STOP_GRACE_S. A parent killed outright (SIGKILL) takes them
with it (service.parent_death).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from service.parent_death import end_with_parent

logger = logging.getLogger(__name__)
STOP_GRACE_S = 10.0  # what `docker stop` gives a container before it kills it
# uvicorn's settings of every API process, the single one of `recall serve --workers 1` included
UVICORN_APP = {"app": "service.app:create_app", "factory": True, "log_level": "info", "access_log": False}


def bound_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A socket bound to the port beside the other processes', not yet listening: uvicorn listens on it once the
    app has started, so no connection waits on a process still loading its model. Without `reuse_port` the bind
    fails while anything listens on the port, another `recall serve` included."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_one(host: str, port: int, parent_pid: int) -> None:
    """One API process (the target of each spawned process)."""
    # Without its parent a process has no supervisor and, on the embedded default, no Redis: a graceful stop buys
    # nothing, and one still starting would hold the port through its Redis retries (RECALL_REDIS_CONNECT_TIMEOUT_S).
    end_with_parent(parent_pid, signal.SIGKILL)
    config = uvicorn.Config(**UVICORN_APP)
    uvicorn.Server(config).run(sockets=[bound_socket(host, port)])


def serve_processes(host: str, port: int, workers: int) -> int:
    """Run `workers` API processes until SIGINT or SIGTERM; the exit code (STARTUP_FAILURE when one could not
    start)."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or sockets of this one
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def start() -> multiprocessing.Process:
        process = spawn.Process(target=serve_one, args=(host, port, os.getpid()), name="recall-api")
        process.start()
        return process

    processes, exit_code = [start() for _ in range(workers)], 0
    while not stop.wait(0.5):
        for n, process in enumerate(processes):
            if process.is_alive():
                continue
            if process.exitcode == STARTUP_FAILURE:
                logger.error("API process %s failed to start: stopping", process.pid)
                exit_code = STARTUP_FAILURE
                stop.set()
                break
            logger.warning("API process %s exited with code %s: starting another", process.pid, process.exitcode)
            processes[n] = start()
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn stops accepting and finishes what it has
    # One deadline for all: a process still starting may be inside a blocking retry (Redis not up yet) and only
    # see the signal when the retry gives up.
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("API process %s did not stop within %s s: killed", process.pid, STOP_GRACE_S)
            process.kill()
            process.join()
    return exit_code
