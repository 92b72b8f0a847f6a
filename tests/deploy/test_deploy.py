"""Dockerfile and docker-compose.yml kept honest without a Docker engine: they parse, and every command, flag,
variable, port and volume in them is one the code really has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cli.main import build_parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
APP_SERVICES = ("pipeline", "api", "worker", "replayer", "archive", "trainer")


def settings_variables() -> set[str]:
    return {"REDIS_URL" if name == "redis_url" else f"RECALL_{name.upper()}" for name in Settings.model_fields}


def parse(command: list[str]):
    try:
        return build_parser().parse_args(command)
    except SystemExit as error:
        raise AssertionError(f"`recall {' '.join(command)}` is not a valid command") from error


def test_compose_has_every_service_and_volume():
    assert set(COMPOSE["services"]) == {"redis", *APP_SERVICES}
    assert set(COMPOSE["volumes"]) == {"shared", "redis-data"}


def test_the_trainer_retrains_on_what_the_service_archives_and_publishes_where_it_serves():
    environment = COMPOSE["x-app"]["environment"]
    trainer = parse(COMPOSE["services"]["trainer"]["command"])
    assert str(trainer.archive) == environment["RECALL_ARCHIVE_DIR"]
    assert str(trainer.index) == environment["RECALL_INDEX_ROOT"]
    assert not trainer.once  # a schedule, not one round


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_app_command_is_a_real_recall_subcommand(service):
    spec = COMPOSE["services"][service]
    assert "entrypoint" not in spec, "the image's entrypoint is `recall`"
    parse(spec["command"])


@pytest.mark.parametrize("service", APP_SERVICES)
def test_environment_names_are_the_settings_and_secrets_come_from_the_environment(service):
    environment = COMPOSE["services"][service]["environment"]
    assert set(environment) <= settings_variables()
    for name in ("REDIS_URL", "RECALL_WEBHOOK_SECRET", "RECALL_API_KEY"):
        assert "${" in environment[name], f"{name} must come from the environment, not the file"


def test_image_environment_names_are_settings_too():
    image_variables = set(re.findall(r"\b(RECALL_[A-Z_]+)=", DOCKERFILE))
    assert image_variables and image_variables <= settings_variables()


def test_ports_healthchecks_and_volumes_agree():
    services = COMPOSE["services"]
    api = parse(services["api"]["command"])
    assert services["api"]["ports"] == [f"{api.port}:{api.port}"] and api.host == "0.0.0.0"
    assert f"127.0.0.1:{api.port}/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    worker = parse(services["worker"]["command"])
    assert f"127.0.0.1:{worker.metrics_port}/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
    replayer = parse(services["replayer"]["command"])
    assert replayer.url == f"http://api:{api.port}"
    pipeline = parse(services["pipeline"]["command"])
    assert pipeline.prepare_only and replayer.data == pipeline.data
    shared_mount = {volume.split(":")[1] for volume in services["pipeline"]["volumes"]}
    assert any(str(pipeline.data).startswith(mount) for mount in shared_mount)
    for service in APP_SERVICES:
        assert services[service]["volumes"] == services["pipeline"]["volumes"]
        assert services[service]["environment"]["RECALL_INDEX_ROOT"] == f"{pipeline.data}/index"


def test_startup_order_and_redis_persistence():
    services = COMPOSE["services"]
    for service in ("api", "worker"):
        assert services[service]["depends_on"] == {"redis": {"condition": "service_healthy"},
                                                   "pipeline": {"condition": "service_completed_successfully"}}
    assert services["replayer"]["depends_on"]["api"] == {"condition": "service_healthy"}
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert "--requirepass" in redis_command and "healthcheck" in services["redis"]
    assert ":${REDIS_PASSWORD" in services["api"]["environment"]["REDIS_URL"]


def test_dockerfile_installs_the_way_make_does_and_runs_the_recall_entry_point():
    assert "bash scripts/setup.sh" in DOCKERFILE
    assert "scripts/setup.sh" in (ROOT / "Makefile").read_text()
    assert re.search(r'^ENTRYPOINT \["recall"\]$', DOCKERFILE, flags=re.MULTILINE)
    parse(json.loads(re.search(r"^CMD (.*)$", DOCKERFILE, flags=re.MULTILINE).group(1)))
    assert re.search(r"^USER recall$", DOCKERFILE, flags=re.MULTILINE) and "useradd" in DOCKERFILE
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert {"FROM python:3.11-slim-bookworm AS base-cpu", "ARG VARIANT=cpu"} <= set(DOCKERFILE.splitlines())
    assert re.search(r"^FROM nvidia/cuda:\S+ AS base-gpu$", DOCKERFILE, flags=re.MULTILINE)
    assert "EXTRAS=gpu,train" in DOCKERFILE and "EXTRAS=cpu,train" in DOCKERFILE


def test_dockerfile_copies_every_package_the_project_installs():
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.findall(r'"(\w+)\*"', re.search(r"include = \[(.*)\]", pyproject).group(1))
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE, flags=re.MULTILINE))
    assert set(packages) <= copied
    assert all((ROOT / name).is_dir() for name in copied)


def test_nothing_that_ships_unpickles_or_evaluates_its_input():
    """No pickle, eval or exec anywhere in the installed packages; numpy and torch loads refuse pickles."""
    unsafe = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|(?<![.\w])eval\(|(?<![.\w])exec\(|allow_pickle=True"
                        r"|weights_only=False|yaml\.load\(")
    packages = ("cli", "contract", "evaluation", "training", "model_export", "index_builder", "service", "demo")
    offenders = [f"{path.relative_to(ROOT)}:{number}" for package in packages for path in (ROOT / package).rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1) if unsafe.search(line)]
    assert offenders == []
    loads = [line for package in packages for path in (ROOT / package).rglob("*.py")
             for line in path.read_text().splitlines() if "np.load(" in line or "torch.load(" in line]
    assert loads and all("allow_pickle=False" in line or "weights_only=True" in line for line in loads)
