"""A local Redis Cluster for the scale-out tests: test-only, so it lives with the tests, not in the product."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from service.redis_server import EmbeddedRedis, RedisServerError


class LocalRedisCluster:
    """A Redis Cluster of `nodes` primaries on loopback ports (no replicas), each an `EmbeddedRedis` in cluster
    mode: what the scale-out tests and the reliability benchmark run against. `url` names the first node;
    `RedisCluster` finds the others from it."""

    def __init__(self, directory: str | Path, nodes: int = 3):
        self.directory = Path(directory).resolve()
        self.nodes = [EmbeddedRedis(self.directory / f"node{i}", cluster=True) for i in range(nodes)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            clients = [node.client() for node in self.nodes]
            slots_per_node = -(-CLUSTER_SLOTS // len(self.nodes))
            for i, client in enumerate(clients):
                first = i * slots_per_node
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, min(first + slots_per_node, CLUSTER_SLOTS) - 1)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + timeout_s
            while not all(_cluster_ready(client, len(self.nodes)) for client in clients):
                if time.monotonic() > deadline:
                    raise RedisServerError(f"the cluster under {self.directory} did not converge in {timeout_s} s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


CLUSTER_SLOTS = 16384


def _cluster_ready(client: redis.Redis, nodes: int) -> bool:
    info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    return info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == nodes
