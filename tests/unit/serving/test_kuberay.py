"""Serving managed by a KubeRay RayService: the logic around the Kubernetes API boundary (a fake API here — no
cluster is reachable; the chart side is rendered for real in tests/deploy)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from arena_ops.config import ArenaConfig
from arena_ops.errors import ServingError
from arena_ops.serving import kuberay
from arena_ops.serving.app import serve_config

CONFIG = {
    "flywheel": "k",
    "storage": {"root": "s3://b/f"},
    "models": {
        "target": {"name": "t", "source": {"kind": "served", "path": "org/t-base", "engine": {"device": "gpu"}}},
        "competitors": [{"name": "c", "source": {"kind": "served", "path": "org/c", "engine": {"device": "gpu"}}}],
        "judge": {"name": "c", "source": {"kind": "served", "path": "org/c", "engine": {"device": "gpu"}}},
    },
    "serving": {"rayservice": {"name": "arena-serve", "namespace": "arena"}, "host": "arena-serve-serve-svc"},
}


class FakeRayServices:
    """The two calls arena makes, and a KubeRay that finishes each rollout after ``ticks`` polls."""

    def __init__(self, cfg: ArenaConfig, ticks: int = 2) -> None:
        apps = {a["name"]: {"status": "RUNNING"} for a in serve_config(cfg)["applications"]}
        self.obj: dict[str, Any] = {
            "metadata": {"generation": 1},
            "spec": {"serveConfigV2": yaml.safe_dump(serve_config(cfg))},
            "status": {"observedGeneration": 1, "activeServiceStatus": {"applicationStatuses": apps}},
        }
        self.patches: list[dict] = []
        self.ticks, self.pending = ticks, 0

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):  # noqa: ANN001
        assert (group, version, namespace, plural, name) == ("ray.io", "v1", "arena", "rayservices", "arena-serve")
        if self.pending:
            self.pending -= 1
            if not self.pending:
                self.obj["status"]["observedGeneration"] = self.obj["metadata"]["generation"]
                self.obj["status"]["activeServiceStatus"]["applicationStatuses"]["arena-model-t"]["status"] = "RUNNING"
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):  # noqa: ANN001
        self.patches.append(body)
        self.obj["spec"].update(body["spec"])
        self.obj["metadata"]["generation"] += 1
        self.obj["status"]["activeServiceStatus"]["applicationStatuses"]["arena-model-t"]["status"] = "DEPLOYING"
        self.pending = self.ticks


@pytest.fixture
def cfg() -> ArenaConfig:
    return ArenaConfig.model_validate(CONFIG)


def test_unchanged_config_is_not_patched(cfg: ArenaConfig) -> None:
    api = FakeRayServices(cfg)
    assert kuberay.apply(cfg, None, api=api, timeout_s=5) is False
    assert api.patches == []


def test_new_target_patches_only_its_app_and_waits_for_kuberay(cfg: ArenaConfig, monkeypatch) -> None:
    monkeypatch.setattr(kuberay.time, "sleep", lambda s: None)
    api = FakeRayServices(cfg, ticks=3)
    assert kuberay.apply(cfg, "s3://b/f/k/iter=0/model/sft", api=api, timeout_s=60) is True
    (patch,) = api.patches
    served = yaml.safe_load(patch["spec"]["serveConfigV2"])
    before = serve_config(cfg)
    changed = [a["name"] for a, b in zip(served["applications"], before["applications"], strict=True) if a != b]
    assert changed == ["arena-model-t"]  # competitors, judge and router untouched: KubeRay redeploys only the target
    # Only the weights (the engine deployment's user_config) differ: Serve reconfigures the running replicas.
    assert served["applications"][0]["deployments"][0]["user_config"] == {"path": "s3://b/f/k/iter=0/model/sft"}
    assert {k: v for k, v in served["applications"][0].items() if k != "deployments"} == {
        k: v for k, v in before["applications"][0].items() if k != "deployments"
    }
    assert api.pending == 0  # returned only after the rollout finished
    assert kuberay.apply(cfg, "s3://b/f/k/iter=0/model/sft", api=api, timeout_s=5) is False  # a rerun: no-op


def test_rollout_that_never_finishes_times_out_naming_the_app(cfg: ArenaConfig, monkeypatch) -> None:
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(kuberay.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(kuberay.time, "sleep", lambda s: None)
    api = FakeRayServices(cfg, ticks=10_000)
    with pytest.raises(ServingError, match=r"arena/arena-serve not ready after 30s: .*arena-model-t: DEPLOYING"):
        kuberay.apply(cfg, "org/t-new", api=api, timeout_s=30)


def test_not_ready_reads_generation_conditions_and_apps() -> None:
    obj = {
        "metadata": {"generation": 3},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "UpgradeInProgress", "status": "True"}],
            "activeServiceStatus": {"applicationStatuses": {"a": {"status": "RUNNING"}}},
        },
    }
    problems = kuberay.not_ready(obj, ["a", "b"])
    assert problems == ["generation 3 not observed yet (at 2)", "an upgrade is in progress", "b: NOT_DEPLOYED"]


def test_unreadable_rayservice_is_a_clear_error(cfg: ArenaConfig) -> None:
    class Missing:
        def get_namespaced_custom_object(self, *a: Any) -> Any:
            raise RuntimeError('(404) rayservices.ray.io "arena-serve" not found')

    with pytest.raises(ServingError, match=r"RayService arena/arena-serve: cannot read it: .*not found"):
        kuberay.apply(cfg, None, api=Missing(), timeout_s=1)


def test_down_refuses_when_kuberay_owns_serving(cfg: ArenaConfig) -> None:
    from arena_ops.serving.deploy import down

    with pytest.raises(ServingError, match="managed by the RayService 'arena-serve'"):
        down(cfg)
