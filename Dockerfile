# syntax=docker/dockerfile:1
# The rkdsc services image: one image, four processes (transmitter, channel, receiver, control),
# chosen by the command. Installed with scripts/setup.sh, the same script as the README and CI.
#
#   docker build -t rkdsc .
#   docker run --rm -p 8000:8000 -e RKDSC_CONTROL_HOST=0.0.0.0 rkdsc              # control plane
#   docker run --rm rkdsc python -m services.transmitter                           # any service
#   docker run --rm --entrypoint rkdsc rkdsc models info                           # the CLI
#
# No HEALTHCHECK here: docker-compose.yml and the Kubernetes probes own health. Datasets are
# never baked in (mount one and set RKDSC_DATA_DIR); the shipped link weights are part of the
# package source (rkdsc_core/weights/default) and come with it.
FROM python:3.11-slim

# RKDSC_EXTRAS: the pyproject extras to install; "" = the runtime only (see docs/deployment.md).
ARG RKDSC_EXTRAS=""
# torch's CPU wheels: setup.sh pins torch==2.13.0, and this index serves its CPU build
# (2.13.0+cpu), never the multi-GB CUDA one. Build-time only (ARG, not ENV).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd --system --gid 10001 rkdsc \
    && useradd --system --uid 10001 --gid rkdsc --create-home --home-dir /home/rkdsc rkdsc \
    && install -d -o rkdsc -g rkdsc /cache /data /var/lib/rkdsc

WORKDIR /app

# Dependency layer: only what setup.sh needs to resolve and install the dependencies (the
# project metadata and the two top-level package markers), so editing the sources does not
# re-download torch. The install is editable: the packages are found under /app at run time.
COPY pyproject.toml README* ./
COPY scripts/setup.sh scripts/setup.sh
COPY rkdsc_core/__init__.py rkdsc_core/__init__.py
COPY services/__init__.py services/__init__.py
RUN PYTHON=python3.11 scripts/setup.sh "$RKDSC_EXTRAS" /opt/venv

# Sources (with the shipped weights) and the protocol definitions.
COPY rkdsc_core rkdsc_core
COPY services services
COPY proto proto

USER rkdsc
# The decoded-dataset cache lives in a volume (compose) or an emptyDir (Kubernetes).
ENV RKDSC_DATA__CACHE_DIR=/cache
EXPOSE 50051 50052 50053 9101 9102 9103 8000
CMD ["python", "-m", "services.control"]
