"""`recall versions` and `recall rollback`: what an operator sees and does when a publish went wrong."""

from __future__ import annotations

import json
import shutil

import pytest

from cli.main import main
from index_builder.build import build_and_publish
from index_builder.versions import current_version

pytestmark = pytest.mark.integration  # exports two models and builds their indexes


def publish_twice(tmp_path, tiny_artifacts):
    """Two kept versions of one export; the export directory is deleted afterwards, as a later export would."""
    _, artifacts = tiny_artifacts
    shutil.copytree(artifacts, tmp_path / "export")
    versions = [build_and_publish(tmp_path / "export", tmp_path / "index").version for _ in range(2)]
    shutil.rmtree(tmp_path / "export")
    return versions


def test_versions_lists_every_kept_version_and_marks_the_live_one(tmp_path, tiny_artifacts, capsys):
    first, second = publish_twice(tmp_path, tiny_artifacts)
    assert main(["versions", "--index", str(tmp_path / "index")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if first[:15] in line or second[:15] in line]
    assert len(rows) == 2 and "live" not in rows[0] and "live" in rows[1] and "recall@100" in rows[1]
    assert main(["versions", "--index", str(tmp_path / "index"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(entry["version"], entry["live"]) for entry in listed] == [(first, False), (second, True)]


def test_rollback_goes_to_the_previous_version_then_to_a_named_one(tmp_path, tiny_artifacts, capsys):
    first, second = publish_twice(tmp_path, tiny_artifacts)
    root = tmp_path / "index"
    assert main(["rollback", "--index", str(root)]) == 0
    assert current_version(root) == first and f"{second} -> {first}" in capsys.readouterr().out
    assert main(["rollback", "--index", str(root)]) == 2  # nothing older than the first
    assert "no kept version older" in capsys.readouterr().err and current_version(root) == first
    assert main(["rollback", "--index", str(root), "--to", second]) == 0 and current_version(root) == second


def test_rollback_refuses_an_unknown_or_broken_version_and_changes_nothing(tmp_path, tiny_artifacts, capsys):
    first, second = publish_twice(tmp_path, tiny_artifacts)
    root = tmp_path / "index"
    assert main(["rollback", "--index", str(root), "--to", "no-such-version"]) == 2
    assert "--to" in capsys.readouterr().err and current_version(root) == second
    (root / "versions" / first / "user_encoder.onnx").write_bytes(b"truncated")
    assert main(["rollback", "--index", str(root)]) == 2
    assert "user_encoder.onnx is missing or its checksum" in capsys.readouterr().err
    assert current_version(root) == second
    assert main(["versions", "--index", str(root)]) == 0
    assert "unservable" in capsys.readouterr().out
