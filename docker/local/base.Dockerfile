# A stand-in for an official base image where no registry is reachable (docker/images.sh builds it): the locally
# bootstrapped Debian 12 with Python 3.11, the official image's user, and a Python environment that user installs
# into, which is what airflow.Dockerfile and ray.Dockerfile expect of apache/airflow and rayproject/ray.
ARG ROOTFS_IMAGE=arena-local/debian:bookworm-py311
# hadolint ignore=DL3006
FROM ${ROOTFS_IMAGE}
ARG USER_NAME
ARG USER_UID
ARG USER_GID
ARG USER_HOME
ARG HOME_DIRS=""
ARG PACKAGES=""
# hadolint ignore=DL3008,SC2016
RUN if [ -n "${PACKAGES}" ]; then apt-get update && apt-get install -y --no-install-recommends ${PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; fi \
    && useradd --create-home --uid "${USER_UID}" --gid "${USER_GID}" --home-dir "${USER_HOME}" --shell /bin/bash \
        "${USER_NAME}" \
    && python3 -m venv /opt/python \
    && /opt/python/bin/pip install --no-cache-dir --quiet --upgrade pip \
    && for d in /opt/python ${HOME_DIRS}; do mkdir -p "$d" && chown -R "${USER_UID}:${USER_GID}" "$d"; done \
    && echo 'export PATH="/opt/python/bin:$PATH"' > /etc/profile.d/arena-python.sh
# Login shells reset PATH (/etc/profile); KubeRay starts Ray nodes with `/bin/bash -lc`, so profile.d puts it back.
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER ${USER_NAME}
WORKDIR ${USER_HOME}
