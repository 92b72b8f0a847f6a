"""The command line as a user meets it: help and defaults on every option, --version, and every bad input one
line with exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from cli.main import build_parser, main
from contract import __version__
from service.server_thread import free_port


def subcommand_parsers(parser: argparse.ArgumentParser, prefix: str = "recall"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommand_parsers(child, f"{prefix} {name}")


def test_every_option_has_help_and_shows_its_default():
    missing = [f"{command} {action.option_strings[0]}" for command, parser in subcommand_parsers(build_parser())
               for action in parser._actions if action.option_strings and action.help is None]
    assert missing == []
    train_help = io.StringIO()
    dict(subcommand_parsers(build_parser()))["recall train"].print_help(train_help)
    assert "(default: 30.0)" in train_help.getvalue()  # --time-budget
    assert "(default: None)" not in train_help.getvalue()  # an unset option says where its value comes from


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.strip() == f"recall {__version__}"


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("recall") and "\n" not in error and "Traceback" not in error, error
    return error


def test_synth_into_an_existing_file_is_named(tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    assert main(["data", "synth", "--out", str(existing)]) == 2
    assert "taken" in one_line_error(capsys) and existing.read_text() == "keep me"


@pytest.mark.parametrize("argv", [["evaluate", "--events", "x.csv", "--model", "popularr"],
                                  ["evaluate", "--events", "x.csv", "--k", "ten"],
                                  ["data", "synth", "--out", "w", "--users", "0"]])
def test_bad_values_exit_2_with_one_line(argv, capsys):
    assert main(argv) == 2
    one_line_error(capsys)


@pytest.mark.integration  # a trained and exported run
def test_an_output_path_that_cannot_be_written_is_named(service_artifacts, small_world, capsys):
    directory, _ = small_world
    code = main(["recommend", "--run", str(service_artifacts.parent / "run"), "--events",
                 str(directory / "events.parquet"), "--k", "5", "--out", "/no/such/directory/candidates.csv"])
    assert code == 2 and "/no/such/directory" in one_line_error(capsys)


@pytest.mark.integration  # a trained and exported run
def test_recommend_out_dash_writes_to_stdout(service_artifacts, small_world, tmp_path, capsys):
    directory, _ = small_world
    users = tmp_path / "users.csv"
    users.write_text("user_id\n3\n")
    assert main(["recommend", "--run", str(service_artifacts.parent / "run"), "--events",
                 str(directory / "events.parquet"), "--k", "5", "--users", str(users), "--out", "-"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"user_id", "item_id", "rank"} <= set(table.columns) and len(table) == 5
    assert not os.path.exists("-")


@pytest.mark.integration
def test_serve_warns_while_no_index_is_published(tmp_path):
    port = free_port()
    env = {**os.environ, "RECALL_INDEX_ROOT": str(tmp_path / "index"), "RECALL_DATA_DIR": str(tmp_path / "var")}
    serve = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, seen = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "no index" not in seen:
            seen += serve.stdout.readline()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert "no index" in seen and "recall build-index" in seen


def test_stats_as_a_table_or_json(write_csv, capsys):
    events = write_csv([{"user_id": 1, "item_id": "a", "timestamp": 0},
                        {"user_id": 1, "item_id": "b", "timestamp": 60}])
    assert main(["data", "stats", "--events", str(events)]) == 0
    assert "sessions per user" in capsys.readouterr().out
    assert main(["data", "stats", "--events", str(events), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["events"] == 2 and stats["sessions"] == 1


@pytest.mark.integration  # runs the ONNX exporter
def test_export_and_build_index_show_their_steps_without_exporter_noise(service_artifacts, tmp_path, capfd):
    assert main(["export", "--run", str(service_artifacts.parent / "run"), "--out", str(tmp_path / "artifacts")]) == 0
    assert main(["build-index", "--artifacts", str(tmp_path / "artifacts"), "--out", str(tmp_path / "index")]) == 0
    captured = capfd.readouterr()
    output = captured.out + captured.err
    for step in ("user encoder -> ONNX", "item tower -> ONNX", "parity check", "building Flat", "publishing"):
        assert step in output, step
    assert "torchvision" not in output and "{'" not in output  # no exporter warnings, no raw dicts
