# nearline-recall: one image for every role (recall serve | worker | demo | train | export | build-index).
#
#   docker build -t nearline-recall .                                   # CPU (default)
#   docker build --build-arg VARIANT=gpu -t nearline-recall:gpu .       # CUDA: onnxruntime-gpu, faiss-gpu
#
# Both stages of a variant share one base, so the virtualenv built in the first runs unchanged in the second.
# The project is installed by scripts/setup.sh, the script `make test` and `make demo` run.

ARG VARIANT=cpu

FROM python:3.11-slim-bookworm AS base-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu EXTRAS=cpu,train

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/python3 /usr/local/bin/python
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 EXTRAS=gpu,train

FROM base-${VARIANT} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY cli/ cli/
COPY contract/ contract/
COPY evaluation/ evaluation/
COPY training/ training/
COPY model_export/ model_export/
COPY index_builder/ index_builder/
COPY service/ service/
COPY demo/ demo/
RUN VENV=/opt/venv PYTHON=python3 EDITABLE=no SKIP_REDIS=yes bash scripts/setup.sh

FROM base-${VARIANT} AS runtime
# redis-server serves the embedded default (`recall serve` without REDIS_URL); compose runs its own Redis.
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 recall && mkdir -p /data && chown recall /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    RECALL_DATA_DIR=/data/var RECALL_INDEX_ROOT=/data/demo/index
WORKDIR /data
USER recall
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["recall"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
