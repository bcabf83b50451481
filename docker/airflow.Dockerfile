# syntax=docker/dockerfile:1.7
# The Airflow image: the official apache/airflow 3.3.2 image + arena_ops (without an inference engine: Airflow tasks
# call the models over HTTP and submit training to Ray) + the DAGs, the UI plugin and the configs.
# Build from the repository root:  docker build -f docker/airflow.Dockerfile -t arena-flywheel/airflow:0.1.0 .
FROM apache/airflow:3.3.2-python3.11

# Dependencies first (cached until pyproject.toml changes). The official constraints file pins Airflow's own
# dependencies; arena_ops adds the flywheel's (pyarrow, scipy, boto3, …). torch comes as the CPU wheel: Airflow
# workers only build training data and rate battles.
COPY --chown=airflow:root pyproject.toml README.md /opt/arena/
COPY --chown=airflow:root arena_ops /opt/arena/arena_ops
RUN pip install --no-cache-dir \
        --extra-index-url https://download.pytorch.org/whl/cpu \
        "torch==2.13.0+cpu" \
        "/opt/arena[k8s]" \
    && python -c "import arena_ops, airflow.sdk"

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root configs /opt/arena/configs

ENV ARENA_CONFIG=/opt/arena/configs/tiny.yaml \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    HF_HUB_OFFLINE=0
