"""What `make images` builds (docker/images.sh --list) and what the manifests that run each image rely on, shared by
the Helm check (static) and the compose test (in the built images)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"

# How the manifests start each image: KubeRay runs a Ray node as `/bin/bash -lc -- "... ray start ..."` (a login
# shell: /etc/profile resets PATH); the official Airflow chart runs `bash -c "exec airflow <component>"`.
LAUNCH = {
    "ray": ["/bin/bash", "-lc", "--", "command -v ray && command -v python && ray --version"],
    "airflow": ["bash", "-c", "command -v airflow && command -v python && airflow version"],
}


def built_images(variants: str = "cpu gpu") -> list[str]:
    out = subprocess.run(
        ["bash", str(DOCKER / "images.sh"), "--list"],
        env={**os.environ, "RAY_VARIANTS": variants},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def kind(image: str) -> str:
    """``ray`` or ``airflow``: the repository's last path part."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def dockerfile_env(name: str) -> dict[str, str]:
    """The ENV of docker/<name>.Dockerfile (``KEY=value`` pairs, continuation lines joined)."""
    text = (DOCKER / f"{name}.Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env
