"""Dockerfile and docker-compose.yml kept honest without a Docker engine: they parse, and every command, flag,
variable, port and volume in them is one the code really has."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from cli.main import build_parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
GPU_COMPOSE = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
APP_SERVICES = ("pipeline", "api", "worker", "replayer", "archive", "trainer")
SERVING_SERVICES = ("api", "worker", "archive")  # the image without torch
SECRETS = ("REDIS_PASSWORD", "RECALL_REDIS_PASSWORD", "RECALL_WEBHOOK_SECRET", "RECALL_API_KEY")
TRAINING_PACKAGES = {"torch", "onnx", "onnxscript", "torchvision"}


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
    environment = COMPOSE["x-app-environment"]
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
    for name in ("RECALL_REDIS_PASSWORD", "RECALL_WEBHOOK_SECRET", "RECALL_API_KEY"):
        assert "${" in environment[name], f"{name} must come from the environment, not the file"
    assert "@" not in environment["REDIS_URL"], "the password travels raw in RECALL_REDIS_PASSWORD, not in the URL"


def test_image_environment_names_are_settings_too():
    image_variables = set(re.findall(r"\b(RECALL_[A-Z_]+)=", DOCKERFILE))
    assert image_variables and image_variables <= settings_variables()


def test_ports_healthchecks_and_volumes_agree():
    services = COMPOSE["services"]
    api = parse(services["api"]["command"])
    assert services["api"]["ports"] == [f"${{API_BIND:-127.0.0.1}}:{api.port}:{api.port}"] and api.host == "0.0.0.0"
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
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "healthcheck" in services["redis"]
    assert "requirepass" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert services["redis"]["restart"] == "unless-stopped"


def test_no_secret_on_a_command_line():
    """A secret interpolated into a command shows in `ps` and `docker inspect`; `$${X}` is expanded inside the
    container by a shell (redis-server reads its password on stdin), `${X}` by compose into the command."""
    interpolated = re.compile(r"(?<!\$)\$\{(" + "|".join(SECRETS) + r")\b")
    for name, spec in COMPOSE["services"].items():
        for field in ("command", "entrypoint"):
            assert not interpolated.search(" ".join(spec.get(field) or [])), f"{name}'s {field} carries a secret"
        assert not interpolated.search(" ".join((spec.get("healthcheck") or {}).get("test", [])))
    assert not re.search("|".join(SECRETS), DOCKERFILE)


def test_one_shot_and_non_http_services_have_no_healthcheck():
    """The image's HEALTHCHECK asks the API's port: on a service that serves nothing there it would only ever
    report unhealthy."""
    for name, spec in COMPOSE["services"].items():
        one_shot = spec.get("restart") == "no"
        serves_http = name in ("redis", "api", "worker")
        if one_shot or not serves_http:
            assert spec.get("healthcheck") == {"disable": True}, name


def test_env_example_names_every_variable_compose_reads_and_env_is_ignored():
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    read = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_TEXT))
    assert read == set(example)
    assert all(example[name] == "" for name in ("REDIS_PASSWORD", "RECALL_WEBHOOK_SECRET", "RECALL_API_KEY"))
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert {".env", ".git", ".venv"} <= set((ROOT / ".dockerignore").read_text().split())


def dockerfile_stages() -> dict[str, list[str]]:
    """stage name -> its instructions (continuation lines joined)."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines():
        if match := re.match(r"FROM (\S+) AS (\S+)", line):
            current = match.group(2)
            stages[current] = [line]
        elif current and line and not line.startswith("#"):
            stages[current].append(line)
    return stages


def stage_ancestry(stages: dict[str, list[str]], name: str) -> list[str]:
    """The stage, the stages it is built FROM and COPYs --from, transitively ("base-${VARIANT}" is both bases)."""
    seen, todo = [], [name]
    while todo:
        stage = todo.pop()
        if stage in seen or (stage not in stages and "${VARIANT}" not in stage):
            continue
        if "${VARIANT}" in stage:
            todo += [stage.replace("${VARIANT}", variant) for variant in ("cpu", "gpu")]
            continue
        seen.append(stage)
        todo += [re.match(r"FROM (\S+)", stages[stage][0]).group(1)]
        todo += re.findall(r"COPY --from=(\S+)", " ".join(stages[stage]))
    return seen


def test_the_serving_image_installs_no_torch():
    stages = dockerfile_stages()
    ancestry = stage_ancestry(stages, "serve")
    installs = [line for stage in ancestry for line in stages[stage] if "setup.sh" in line]
    assert installs and all("EXTRAS=$SERVE_EXTRA " in line for line in installs)
    serve_extras = {line.split("SERVE_EXTRA=")[1].split()[0] for stage in ancestry for line in stages[stage]
                    if "SERVE_EXTRA=" in line}
    assert serve_extras == {"serve", "serve-gpu"}
    for extra in ("serve", "serve-gpu"):
        required = {re.split(r"[<>=!~\[; ]", requirement)[0]
                    for requirement in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"][extra]}
        assert not required & TRAINING_PACKAGES, extra
    for service in SERVING_SERVICES:
        assert COMPOSE["services"][service]["build"]["target"] == "serve"
    for service in ("pipeline", "trainer"):
        assert COMPOSE["services"][service]["build"]["target"] == "full"
    assert re.search(r"^FROM runtime AS full$", DOCKERFILE.strip().splitlines()[-2]), "a plain build is full"


# onnxruntime-gpu on PyPI: CUDA 12 builds from 1.19 up to 1.26, CUDA 13 from 1.27 (their wheels' requirements).
def onnxruntime_gpu_cuda_major(requirement: str) -> int:
    lower = re.search(r">=\s*1\.(\d+)", requirement)
    upper = re.search(r"<\s*1\.(\d+)", requirement)
    assert lower and upper, f"{requirement}: pin both ends, an open range crosses CUDA majors"
    if int(lower.group(1)) >= 19 and int(upper.group(1)) <= 27:
        return 12
    if int(lower.group(1)) >= 27:
        return 13
    raise AssertionError(f"{requirement} spans CUDA majors")


def test_the_gpu_variant_is_on_one_cuda_major():
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.\S+ AS base-gpu$", DOCKERFILE, flags=re.MULTILINE)
    torch_index = re.search(r"TORCH_INDEX_URL=https://download.pytorch.org/whl/cu(\d\d)\d\b",
                            " ".join(dockerfile_stages()["base-gpu"]))
    gpu_extra = PYPROJECT["optional-dependencies"]["serve-gpu"]
    faiss = [re.match(r"faiss-gpu-cu(\d+)", requirement) for requirement in gpu_extra]
    onnxruntime = [requirement for requirement in gpu_extra if requirement.startswith("onnxruntime-gpu")]
    majors = {int(base.group(1)), int(torch_index.group(1)), *(int(m.group(1)) for m in faiss if m),
              onnxruntime_gpu_cuda_major(onnxruntime[0])}
    assert len(majors) == 1, majors


def test_the_gpu_override_reserves_a_gpu_for_every_computing_service():
    for name, spec in GPU_COMPOSE["services"].items():
        assert name in COMPOSE["services"]
        devices = spec["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert {"api", "worker", "trainer"} <= set(GPU_COMPOSE["services"])


def test_dockerfile_installs_the_way_make_does_and_runs_the_recall_entry_point():
    assert "bash scripts/setup.sh" in DOCKERFILE
    assert "scripts/setup.sh" in (ROOT / "Makefile").read_text()
    assert re.search(r'^ENTRYPOINT \["recall"\]$', DOCKERFILE, flags=re.MULTILINE)
    parse(json.loads(re.search(r"^CMD (.*)$", DOCKERFILE, flags=re.MULTILINE).group(1)))
    assert re.search(r"^USER recall$", DOCKERFILE, flags=re.MULTILINE) and "useradd" in DOCKERFILE
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert {"FROM python:3.11-slim-bookworm AS base-cpu", "ARG VARIANT=cpu"} <= set(DOCKERFILE.splitlines())
    assert re.search(r"^FROM nvidia/cuda:\S+ AS base-gpu$", DOCKERFILE, flags=re.MULTILINE)
    assert "EXTRAS=$SERVE_EXTRA,train" in DOCKERFILE and "SERVE_EXTRA=serve-gpu" in DOCKERFILE


def test_dependencies_are_installed_before_the_source_is_copied():
    """A layer of dependencies read from pyproject.toml alone, so a code edit reinstalls nothing."""
    stages = dockerfile_stages()
    for deps in ("deps-serve", "deps-full"):
        lines = " ".join(stages[deps])
        assert "DEPS_ONLY=yes" in lines and "--mount=type=cache,target=/root/.cache/pip" in lines
        assert "--from=source" not in lines
    for build in ("build-serve", "build-full"):
        assert "COPY --from=source" in " ".join(stages[build])


def test_dockerfile_copies_every_package_the_project_installs():
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.findall(r'"(\w+)\*"', re.search(r"include = \[(.*)\]", pyproject).group(1))
    copied = set(re.findall(r"^COPY (\w+)/ /src/\1/$", DOCKERFILE, flags=re.MULTILINE))
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
