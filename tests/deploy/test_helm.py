"""The Helm chart, rendered offline by Helm's own Go engine (helm-python-sdk; no cluster, no `helm` binary):
with its defaults and with the CI values, subcharts off and on (their charts are not vendored: only this chart's
templates render). Every manifest is checked against the Kubernetes schemas (kubernetes-validate), the RayService's
serveConfigV2 against what arena_ops.serving declares for the same config, and the values schema rejects typos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from arena_ops.config import ArenaConfig
from arena_ops.helm_schema import render as render_schema
from arena_ops.serving.app import serve_config

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is part of the dev extra")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is part of the dev extra")

CHART = Path(__file__).resolve().parents[2] / "helm" / "arena-flywheel"
K8S_VERSION = "1.31.0"
NO_SUBCHARTS = {"airflow": {"enabled": False}, "kuberay-operator": {"enabled": False}}
CI_VALUES = yaml.safe_load((CHART / "ci" / "ci-values.yaml").read_text())
GPU_VALUES = yaml.safe_load((CHART / "examples" / "gpu-values.yaml").read_text())


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


VARIANTS = {
    "gpu": GPU_VALUES,
    "gpu-no-subcharts": _merge(GPU_VALUES, NO_SUBCHARTS),
    "ci": CI_VALUES,
    "ci-no-subcharts": _merge(CI_VALUES, NO_SUBCHARTS),
}


@pytest.fixture(scope="module")
def chart() -> Any:
    return helm.Chart.load(str(CHART))


def render(chart: Any, values: dict) -> tuple[dict, list[dict]]:
    chart.validate_schema(values)
    files = chart.render(values, name="arena", namespace="arena", is_install=True)
    docs = [d for name, text in files.items() if name.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return chart.merge_values(values), docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_manifest_is_valid_kubernetes(chart: Any, variant: str) -> None:
    _, docs = render(chart, VARIANTS[variant])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "RayService",
            "RayCluster",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "Job",
            "Role",
            "RoleBinding",
        ]
    )
    for doc in docs:
        if doc["apiVersion"].startswith("ray.io/"):
            # KubeRay CRDs are not in the Kubernetes schemas: validate every pod template they carry.
            spec = doc["spec"].get("rayClusterConfig", doc["spec"])
            groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
            for group in groups:
                pod = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": "x"},
                    "template": group["template"],
                }
                kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", ["gpu", "ci"])
def test_rayservice_serves_exactly_what_arena_ops_serving_declares(chart: Any, variant: str) -> None:
    values, docs = render(chart, VARIANTS[variant])
    (rayservice,) = by_kind(docs, "RayService")
    rendered = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    cfg = ArenaConfig.model_validate(values["flywheel"]["config"])
    assert rendered == serve_config(cfg)  # one source of truth: the flywheel config
    names = [app["name"] for app in rendered["applications"]]
    assert (
        names[-1] == "arena-router"
        and len(names)
        == len(
            {m.name for m in cfg.models.battlers() if m.source.kind == "served"}
            | ({cfg.models.judge.name} if cfg.models.judge.source.kind == "served" else set())
        )
        + 1
    )


@pytest.mark.parametrize("backend", ["vllm", "ray-serve-llm"])
def test_serve_config_agrees_for_cpu_engines_and_s3_weights(chart: Any, backend: str) -> None:
    """Both backends; engine defaults, CPU-only fields, s3:// weights, a GPU engine and odd names, none of them in the
    shipped values."""
    config = {
        "flywheel": "edge",
        "storage": {"root": "s3://b/f"},
        "models": {
            "target": {
                "name": "org/My_Target:v2",
                "source": {
                    "kind": "served",
                    "path": "s3://b/models/t",
                    "engine": {"kv_cache_gib": 2.5, "min_replicas": 0},
                },
            },
            "competitors": [
                {
                    "name": "c",
                    "source": {"kind": "served", "path": "org/c", "engine": {"device": "cpu", "cpus_per_replica": 3}},
                },
                {
                    "name": "g",
                    "source": {
                        "kind": "served",
                        "path": "/models/g",
                        "tiny": {"arch": "qwen2"},
                        "engine": {"device": "gpu", "tensor_parallel_size": 2},
                    },
                },
            ],
            "judge": {"name": "j", "source": {"kind": "external", "base_url": "http://x/v1", "model": "j"}},
        },
        "serving": {"backend": backend, "port": 9000, "route_prefix": "/api"},
    }
    values = _merge(NO_SUBCHARTS, {"flywheel": {"config": config}})
    merged, docs = render(chart, values)
    rendered = yaml.safe_load(by_kind(docs, "RayService")[0]["spec"]["serveConfigV2"])
    assert rendered == serve_config(ArenaConfig.model_validate(merged["flywheel"]["config"]))
    target, _, gpu, router = rendered["applications"]
    if backend == "vllm":
        (deployment,) = target["deployments"]
        assert deployment["user_config"] == {"path": "s3://b/models/t"}  # fetched by the replica on its node
        assert deployment["autoscaling_config"]["min_replicas"] == 0 and target["args"]["engine"]["kv_cache_gib"] == 2.5
        assert gpu["deployments"][0]["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 2}
        assert gpu["deployments"][0]["user_config"] == {"path": "/models/g", "tiny": {"arch": "qwen2"}}
        assert router["args"]["upstreams"]["g"] == {"app": "arena-model-g"}  # called through a deployment handle
    else:
        source = target["args"]["llm_configs"][0]["model_loading_config"]["model_source"]
        assert source == {"bucket_uri": "s3://b/models/t"}
        assert router["args"]["upstreams"]["g"] == "http://127.0.0.1:9000/m/g"


def test_key_fields(chart: Any) -> None:
    values, docs = render(chart, VARIANTS["ci"])
    (cm,) = by_kind(docs, "ConfigMap")
    mounted = yaml.safe_load(cm["data"]["flywheel.yaml"])
    # The values' config, plus where the chart's RayService is: `serve up` patches it rather than deploying itself.
    assert mounted.pop("serving") == {
        "rayservice": {"name": "arena-serve", "namespace": "arena"},
        "host": "arena-serve-serve-svc",
        "ray_address": "ray://arena-train-head-svc:10001",  # where the Airflow image (no torch) embeds
    }
    assert mounted == {k: v for k, v in values["flywheel"]["config"].items() if k != "serving"}
    ArenaConfig.model_validate(yaml.safe_load(cm["data"]["flywheel.yaml"]))  # the DAGs can load what is mounted
    (binding,) = by_kind(docs, "RoleBinding")
    assert [s["name"] for s in binding["subjects"]] == ["arena-worker", "arena-scheduler"]
    (role,) = by_kind(docs, "Role")
    assert role["rules"][0]["resourceNames"] == ["arena-serve"] and role["rules"][0]["verbs"] == ["get", "patch"]
    for doc in by_kind(docs, "RayService") + by_kind(docs, "RayCluster"):
        spec = doc["spec"].get("rayClusterConfig", doc["spec"])
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            (container,) = group["template"]["spec"]["containers"]
            assert container["image"] == "ghcr.io/arena-flywheel/ray:0.1.0-cpu"
            env = {e["name"]: e for e in container["env"]}
            assert env["ARENA_CONFIG"]["value"] == "/opt/arena/config/flywheel.yaml"
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
                "name": "arena-s3",
                "key": "AWS_SECRET_ACCESS_KEY",
            }
            assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://arena-minio:9000"
            volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
            assert volumes["arena-config"]["configMap"]["name"] == cm["metadata"]["name"]
    (minio,) = by_kind(docs, "Deployment")
    assert minio["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "arena-minio"}}]
    # Airflow subchart values point at the same ConfigMap and Secret.
    assert values["airflow"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    assert "arena-s3" in values["airflow"]["extraEnvFrom"]

    _, gpu_docs = render(chart, VARIANTS["gpu-no-subcharts"])
    worker = by_kind(gpu_docs, "RayService")[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert worker["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_switches_turn_parts_off(chart: Any) -> None:
    off = _merge(
        VARIANTS["ci-no-subcharts"],
        {"minio": {"enabled": False}, "rayTraining": {"enabled": False}, "rayService": {"enabled": False}},
    )
    _, docs = render(chart, off)
    assert [d["kind"] for d in docs] == ["ConfigMap"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"minio": {"enabld": True}}, "enabld"),
        ({"rayService": {"workers": {"replicas": -1}}}, "replicas"),
        ({"flywheel": {"config": {"storage": {"roott": "s3://x"}}}}, "roott"),
        ({"flywheel": {"config": {"models": {"judge": {"name": "j", "source": {"kind": "nope"}}}}}}, "kind"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(chart: Any, values: dict, message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        chart.validate_schema(_merge(VARIANTS["ci-no-subcharts"], values))


def test_a_config_is_required(chart: Any) -> None:
    with pytest.raises(helm.HelmValuesError, match="flywheel/config"):
        chart.validate_schema(NO_SUBCHARTS)


def test_values_schema_is_generated_from_the_config_models() -> None:
    assert (CHART / "values.schema.json").read_text() == render_schema(), "run: python -m arena_ops.helm_schema"


def test_every_value_is_documented() -> None:
    """values.yaml explains each top-level key with a comment right above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")):
            assert lines[i - 1].startswith("#"), f"values.yaml: {line.split(':')[0]} has no comment above it"


@pytest.mark.parametrize("variant", ["ci", "gpu"])
def test_manifests_run_exactly_the_images_make_images_builds(chart: Any, variant: str) -> None:
    """Names and tags as `make images` tags them (docker/images.sh --list); each container's start command and the
    paths its env names are what the image provides (the compose test runs LAUNCH inside the built images)."""
    from tests.deploy.images import built_images, dockerfile_env, kind

    built = built_images()
    values, docs = render(chart, VARIANTS[variant])
    ours = []
    for doc in by_kind(docs, "RayService") + by_kind(docs, "RayCluster"):
        spec = doc["spec"].get("rayClusterConfig", doc["spec"])
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            ours += group["template"]["spec"]["containers"]
    images = {c["image"] for c in ours}
    want_ray = next(i for i in built if kind(i) == "ray" and i.endswith("-cpu" if variant == "ci" else "-gpu"))
    assert images == {want_ray}, f"{variant}: the Ray containers run {images}; make images builds {built}"
    airflow = f"{values['airflow']['defaultAirflowRepository']}:{values['airflow']['defaultAirflowTag']}"
    assert airflow in built and kind(airflow) == "airflow", f"Airflow runs {airflow}; make images builds {built}"
    for c in ours:
        # KubeRay writes the command (`ray start` under a login bash: LAUNCH checks `ray` is found there).
        assert "command" not in c and "args" not in c, c
        env = {e["name"]: e.get("value") for e in c["env"]}
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        assert any(env["ARENA_CONFIG"].startswith(m + "/") for m in mounts), (env["ARENA_CONFIG"], mounts)
    # The Airflow chart's env: the config on the mounted ConfigMap, the plugins where the image puts them.
    af_env = {e["name"]: e["value"] for e in values["airflow"]["env"]}
    af_mounts = [m["mountPath"] for m in values["airflow"]["volumeMounts"]]
    assert any(af_env["ARENA_CONFIG"].startswith(m + "/") for m in af_mounts)
    assert af_env["ARENA_FLYWHEELS"] in af_mounts  # the DAGs' flywheel folder is the mounted ConfigMap
    assert "ARENA_CONFIG" not in dockerfile_env("airflow")  # no fallback config baked into the image
    image_env = dockerfile_env("airflow")
    assert af_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == image_env["AIRFLOW__CORE__PLUGINS_FOLDER"]
    dags = values["airflow"].get("dags", {}).get("mountPath", "/opt/airflow/dags")  # the chart's default
    assert image_env["AIRFLOW__CORE__DAGS_FOLDER"] == dags
