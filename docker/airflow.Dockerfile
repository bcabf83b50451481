# The Airflow image: arena_ops without torch or an inference engine (Airflow tasks call the models over HTTP, deploy
# Serve applications, embed and train through Ray), the DAGs, the UI plugin and the configs.
#   docker build -f docker/airflow.Dockerfile -t ghcr.io/arena-flywheel/airflow:0.1.0 .      (or: make images)
# BASE_IMAGE: the official image by default; `make images` passes a locally bootstrapped Debian with Python 3.11
# where no registry is reachable (docker/local/base.Dockerfile gives it the same user and a writable Python).
ARG BASE_IMAGE=apache/airflow:3.3.2-python3.11
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
USER 0
RUN mkdir -p /opt/arena && chown airflow:root /opt/arena
USER 50000

# Dependencies first, from pyproject.toml alone (an empty package and README stand in): this layer stays cached
# until the dependencies change. Then the code, without dependencies.
COPY --chown=airflow:root pyproject.toml /opt/arena/
RUN mkdir -p /opt/arena/arena_ops && touch /opt/arena/arena_ops/__init__.py /opt/arena/README.md \
    && pip install --no-cache-dir "/opt/arena[k8s]" "psycopg2-binary>=2.9" "asyncpg>=0.29"
COPY --chown=airflow:root README.md /opt/arena/
COPY --chown=airflow:root arena_ops /opt/arena/arena_ops
# (pip builds in the source tree: setuptools would keep the stand-in's build/ copy of __init__.py, which is newer
# than the copied sources, so build/ and the egg-info go before and after.)
RUN rm -rf /opt/arena/build /opt/arena/*.egg-info \
    && pip install --no-cache-dir --no-deps --force-reinstall /opt/arena \
    && rm -rf /opt/arena/build /opt/arena/*.egg-info \
    && python -I -c "from arena_ops import __version__; import arena_ops.flywheel, arena_ops.ui.app, airflow.sdk, ray.serve; \
import importlib.util as u; \
bad = [m for m in ('torch', 'vllm', 'deepspeed', 'trl', 'sentence_transformers') if u.find_spec(m)]; \
assert not bad, f'the Airflow image must not carry {bad}'"

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root configs /opt/arena/configs
# Mount points of the compose stack's volumes, owned by airflow so that a fresh named volume is writable.
RUN mkdir -p /opt/airflow/auth /opt/airflow/logs

# No flywheel config by default: compose and Helm set ARENA_FLYWHEELS to the folder they mount.
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    HF_HUB_OFFLINE=0
WORKDIR /opt/airflow
