"""The API served by uvicorn in a background thread of this process: what `recall demo` runs (and the tests)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from service.app import create_app
from service.settings import Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerThread:
    """`start()` returns once the lifespan has run (Redis, model, worker up); `stop()` runs its shutdown."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int | None = None):
        self.settings = settings
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = f"http://{host}:{self.port}"

    @property
    def app(self):
        return self.server.config.app

    def start(self, timeout_s: float = 120) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
