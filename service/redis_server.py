"""A private `redis-server` (Debian's binary) on a unix socket: the embedded default of `recall serve` and the
fixture of every test that needs Redis. Never assumes a server is already running."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from service.parent_death import child_setup


class RedisServerError(RuntimeError):
    pass


class EmbeddedRedis:
    """Starts redis-server with its data and socket under `directory`; `stop()` (or the context) ends it.

    A cluster node (`cluster=True`) listens on a loopback TCP port instead: cluster nodes announce host:port."""

    def __init__(self, directory: str | Path, persistence: bool = True, password: str | None = None,
                 cluster: bool = False):
        self.directory = Path(directory).resolve()  # redis-server changes into it: relative paths would break
        self.socket = self.directory / "redis.sock"
        self.persistence = persistence
        self.password = password
        self.cluster = cluster
        self.port = cluster_port() if cluster else 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.cluster:
            return f"redis://127.0.0.1:{self.port}"
        return f"unix://{self.socket}" + (f"?password={self.password}" if self.password else "")

    def client(self) -> redis.Redis:
        if self.cluster:
            return redis.Redis(port=self.port, password=self.password)
        return redis.Redis(unix_socket_path=str(self.socket), password=self.password)

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed (Debian: apt-get install redis-server; "
                                   "`make test` and `make demo` install it when run as root)")
        self.directory.mkdir(parents=True, exist_ok=True)
        arguments = [binary, "--port", str(self.port), "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                     "--dir", str(self.directory), "--save", "60 1000" if self.persistence else "",
                     "--appendonly", "yes" if self.persistence else "no", "--daemonize", "no",
                     "--logfile", str(self.directory / "redis.log")]
        if self.cluster:
            arguments += ["--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        if self.password:
            arguments += ["--requirepass", self.password]
        # redis-server ends with this process, even when it is SIGKILLed (service.parent_death)
        self.process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        **child_setup(os.getpid()))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(f"redis-server exited at start; see {self.directory / 'redis.log'}")
            try:
                if self.client().ping():
                    return self
            except (redis.ConnectionError, FileNotFoundError):
                time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            with socket.socket() as first, socket.socket() as bus:
                first.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RedisServerError("no free pair of loopback ports for a cluster node")
