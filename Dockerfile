# syntax=docker/dockerfile:1
# polydub in an image, for Prefect's Docker and Kubernetes work pools (README: "Containers";
# deploy/prefect.containers.yaml runs the flows in /opt/polydub):
#   docker build --target cpu -t polydub:cpu .
#   docker build --target gpu -t polydub:gpu .    # run with the NVIDIA container toolkit (--gpus all)
# Model weights are not in the image: mount them at /models (DUB_MODELS_DIR), e.g. a volume
# filled once with `dub models pull ...`.

FROM python:3.11-slim-bookworm AS base
# the system packages ./dev installs for running polydub
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg espeak-ng sox libsndfile1 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 polydub
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DUB_HOME=/var/lib/polydub DUB_MODELS_DIR=/models
WORKDIR /opt/polydub
COPY pyproject.toml constraints.txt LICENSE README.md prefect.yaml ./
COPY polydub ./polydub
COPY deploy ./deploy
COPY examples ./examples
RUN mkdir -p /var/lib/polydub /models && chown polydub /var/lib/polydub

FROM base AS cpu
# torch's CPU build of the same version: no CUDA libraries (about 2 GB less)
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt . \
 && pip install --no-deps -c constraints.txt chatterbox-tts==0.1.7
USER polydub

FROM base AS gpu
# torch's default Linux build carries its CUDA libraries; the driver comes from the host
RUN pip install -c constraints.txt . \
 && pip install --no-deps -c constraints.txt chatterbox-tts==0.1.7
USER polydub
