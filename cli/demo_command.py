"""`recall demo`: the whole product on one machine, from data to live recall, in one command.

Offline: a synthetic world (or --events/--items), a time split, training, export, index (demo/prepare.py).
Online: the embedded service (private redis-server, worker, API) in this process, or a running one (--url);
history replayed through the signed webhook, then held-out sessions one by one (demo/replay.py); a report.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
from pathlib import Path

from cli.console import make_console
from contract.errors import DataError


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="train, serve and replay held-out events end to end, with a report")
    demo.add_argument("--data", type=Path, default=Path("demo_data"), help="working directory (reused)")
    demo.add_argument("--events", type=Path, help="your events file (data contract); default: a synthetic world")
    demo.add_argument("--items", type=Path, help="your items file")
    demo.add_argument("--users", type=int, default=2000, help="synthetic world: users")
    demo.add_argument("--catalogue", type=int, default=1000, help="synthetic world: items")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs of the demo's model")
    demo.add_argument("--k", type=int, default=50, help="candidates per request (Recall@k is reported)")
    demo.add_argument("--replay-users", type=int, default=200, help="held-out sessions replayed one by one")
    demo.add_argument("--once", action="store_true", help="exit after the report instead of serving on")
    demo.add_argument("--json", type=Path, help="also write the report here")
    demo.add_argument("--host", default="127.0.0.1", help="address the demo's service listens on")
    demo.add_argument("--port", type=int, default=8000, help="port the demo's service listens on")
    demo.add_argument("--url", help="replay against this running service instead of starting one (needs "
                      "RECALL_WEBHOOK_SECRET, and RECALL_API_KEY when it is set)")
    demo.add_argument("--prepare-only", action="store_true", help="stop after data, training, export and index")
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from contract.columns import Columns
    from contract.table_io import read_table
    from demo.prepare import DemoData, prepare, read_events

    console = make_console()
    if args.url:
        data = DemoData(args.data)
        if not data.ready():
            raise DataError(str(args.data), "not prepared: run `recall demo --prepare-only --data DIR` first")
    else:
        data = prepare(args.data, args.events, args.items, args.users, args.catalogue, args.epochs, console)
    if args.prepare_only:
        console.print(f"prepared {data.directory}: index {data.index}")
        return 0
    history, holdout = read_events(data.history), read_events(data.holdout)
    items = read_table(data.items, Columns.items_required) if data.items.exists() else None
    if args.url:
        secret = os.environ.get("RECALL_WEBHOOK_SECRET")
        if not secret:
            raise DataError("environment", "set the service's webhook secret", column="RECALL_WEBHOOK_SECRET")
        return _replay_and_report(console, args, args.url, secret, os.environ.get("RECALL_API_KEY"), history,
                                  holdout, items)
    from service.server_thread import ServerThread
    from service.settings import Settings

    generated = not os.environ.get("RECALL_WEBHOOK_SECRET")
    secret = os.environ.get("RECALL_WEBHOOK_SECRET") or secrets.token_urlsafe(24)
    settings = Settings(redis_url=None, data_dir=args.data / "var", index_root=data.index, webhook_secret=secret)
    with console.status("starting the embedded service (redis-server, worker, API)"):
        try:
            server = ServerThread(settings, args.host, args.port).start()
        except RuntimeError as error:
            console.print(f"[red]recall demo: {error}")
            return 1
    try:
        code = _replay_and_report(console, args, server.url, secret, None, history, holdout, items)
        if not args.once:
            shown = f"Webhook secret (generated for this run): {secret}\n" if generated else ""
            console.print(f"\nThe API is up at [bold]{server.url}[/] (docs: {server.url}/docs).\n{shown}"
                          "Press Ctrl-C to stop.")
            threading.Event().wait()
        return code
    finally:
        server.stop()


def _replay_and_report(console, args, url, secret, api_key, history, holdout, items) -> int:
    from demo.replay import ReplayResult, ServiceClient, replay_sessions, seed
    from demo.report import print_stories, print_summary, summary

    client = ServiceClient(url, secret, api_key)
    result = ReplayResult(k=args.k)
    seed(client, history, result)
    replay_sessions(client, history, holdout, args.k, args.replay_users, result)
    print_stories(console, result, history, items)
    report = summary(result)
    print_summary(console, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
