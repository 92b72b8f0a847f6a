# syntax=docker/dockerfile:1
# nearline-recall: two images per variant, one entry point (`recall`).
#
#   docker build --target serve -t nearline-recall-serve .   # recall serve | worker | archive: no torch, no onnx
#   docker build -t nearline-recall .                         # everything: + train | export | build-index | demo
#   docker build --build-arg VARIANT=gpu ...                  # CUDA 12: onnxruntime-gpu, faiss-gpu, CUDA torch
#
# Dependencies are installed from pyproject.toml alone, in a layer of their own, before the source is copied: an
# edit to the code reinstalls nothing. The project itself is installed by scripts/setup.sh, the script `make test`
# and `make demo` run. Both stages of a variant share one base, so a virtualenv built in one runs in the other.

ARG VARIANT=cpu

FROM python:3.11-slim-bookworm AS base-cpu
ENV SERVE_EXTRA=serve TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# One CUDA major for everything in the GPU image (tests/deploy checks it): the base image, torch's wheel index,
# onnxruntime-gpu (its PyPI builds are CUDA 12 before 1.27, CUDA 13 from 1.27; pinned in pyproject.toml) and
# faiss-gpu-cu12.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/python3 /usr/local/bin/python
ENV SERVE_EXTRA=serve-gpu TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# The source the project installs, in one place for both builds.
FROM scratch AS source
COPY cli/ /src/cli/
COPY contract/ /src/contract/
COPY evaluation/ /src/evaluation/
COPY training/ /src/training/
COPY model_export/ /src/model_export/
COPY index_builder/ /src/index_builder/
COPY service/ /src/service/
COPY demo/ /src/demo/

FROM base-${VARIANT} AS deps-serve
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY scripts/ scripts/
RUN --mount=type=cache,target=/root/.cache/pip \
    VENV=/opt/venv PYTHON=python3 EXTRAS=$SERVE_EXTRA DEPS_ONLY=yes SKIP_REDIS=yes bash scripts/setup.sh

FROM deps-serve AS deps-full
RUN --mount=type=cache,target=/root/.cache/pip \
    VENV=/opt/venv PYTHON=python3 EXTRAS=$SERVE_EXTRA,train DEPS_ONLY=yes SKIP_REDIS=yes bash scripts/setup.sh

FROM deps-serve AS build-serve
COPY --from=source /src/ ./
RUN --mount=type=cache,target=/root/.cache/pip \
    VENV=/opt/venv PYTHON=python3 EXTRAS=$SERVE_EXTRA EDITABLE=no SKIP_REDIS=yes bash scripts/setup.sh

FROM deps-full AS build-full
COPY --from=source /src/ ./
RUN --mount=type=cache,target=/root/.cache/pip \
    VENV=/opt/venv PYTHON=python3 EXTRAS=$SERVE_EXTRA,train EDITABLE=no SKIP_REDIS=yes bash scripts/setup.sh

FROM base-${VARIANT} AS runtime
# redis-server serves the embedded default (`recall serve` without REDIS_URL); compose runs its own Redis.
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 recall && mkdir -p /data && chown recall /data
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    RECALL_DATA_DIR=/data/var RECALL_INDEX_ROOT=/data/demo/index
WORKDIR /data
USER recall
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["recall"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS serve
COPY --from=build-serve /opt/venv /opt/venv

# The last stage is what a plain `docker build` gives: the full image.
FROM runtime AS full
COPY --from=build-full /opt/venv /opt/venv
