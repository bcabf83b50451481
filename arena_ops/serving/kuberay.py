"""Serving managed by a KubeRay RayService (``serving.rayservice``; the Helm chart sets it).

On Kubernetes the RayService is the one owner of the Serve applications: deploying through Ray as well would race
KubeRay, which re-applies its ``serveConfigV2`` whenever the resource changes. So here ``serve up`` renders
:func:`arena_ops.serving.app.serve_config` for this round (the new target checkpoint), patches the RayService when it
differs, and waits until KubeRay reports the new generation with every application RUNNING. Only the target's
application changes between rounds, so KubeRay redeploys only that one.

Needs the ``kubernetes`` client (the ``k8s`` extra; the Airflow image has it) and RBAC to get/patch the RayService
(the chart's Role).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml

from arena_ops.config import ArenaConfig
from arena_ops.errors import ServingError
from arena_ops.serving.app import serve_config

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def custom_objects_api() -> Any:
    """The CustomObjectsApi of the cluster this runs in (its service account), else of the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _where(cfg: ArenaConfig) -> tuple[str, str]:
    ref = cfg.serving.rayservice
    if ref is None:
        raise ServingError("serving.rayservice is not set: serving is not managed by a RayService")
    namespace = ref.namespace or (_POD_NAMESPACE.read_text().strip() if _POD_NAMESPACE.exists() else None)
    if not namespace:
        raise ServingError(f"serving.rayservice.namespace is not set and {_POD_NAMESPACE} does not exist")
    return namespace, ref.name


def apply(cfg: ArenaConfig, target_path: str | None = None, api: Any = None, timeout_s: float | None = None) -> bool:
    """Make the RayService serve this config (with ``target_path`` as the target's weights); wait until it does.
    Returns whether it had to be patched."""
    api = api or custom_objects_api()
    namespace, name = _where(cfg)
    desired = serve_config(cfg, target_path)
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as exc:  # kubernetes.client.ApiException, or a connection error
        raise ServingError(f"RayService {namespace}/{name}: cannot read it: {exc}") from exc
    current = yaml.safe_load(obj.get("spec", {}).get("serveConfigV2") or "{}")
    changed = current != desired
    if changed:
        log.info("patching RayService %s/%s: %s", namespace, name, _changed_apps(current, desired))
        body = {"spec": {"serveConfigV2": yaml.safe_dump(desired, sort_keys=False)}}
        try:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
        except Exception as exc:
            raise ServingError(f"RayService {namespace}/{name}: patch refused: {exc}") from exc
    apps = [a["name"] for a in desired["applications"]]
    wait_ready(api, namespace, name, apps, timeout_s if timeout_s is not None else cfg.serving.deploy_timeout_s)
    return changed


def wait_ready(api: Any, namespace: str, name: str, apps: list[str], timeout_s: float, poll_s: float = 5.0) -> None:
    """Until KubeRay has observed the latest generation, no upgrade is in progress and every app is RUNNING."""
    deadline = time.monotonic() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        problems = not_ready(obj, apps)
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise ServingError(f"RayService {namespace}/{name} not ready after {timeout_s:.0f}s: {'; '.join(problems)}")
        time.sleep(poll_s)


def not_ready(obj: dict[str, Any], apps: list[str]) -> list[str]:
    """Why a RayService does not yet serve ``apps`` (empty when it does), from its status."""
    status = obj.get("status") or {}
    problems = []
    generation = obj.get("metadata", {}).get("generation", 0)
    if status.get("observedGeneration", -1) < generation:
        problems.append(f"generation {generation} not observed yet (at {status.get('observedGeneration')})")
    if any(c.get("type") == "UpgradeInProgress" and c.get("status") == "True" for c in status.get("conditions", [])):
        problems.append("an upgrade is in progress")
    active = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    for app in apps:
        state = (active.get(app) or {}).get("status", "NOT_DEPLOYED")
        if state != "RUNNING":
            problems.append(f"{app}: {state}")
    return problems


def status(cfg: ArenaConfig, api: Any = None) -> dict[str, Any]:
    api = api or custom_objects_api()
    namespace, name = _where(cfg)
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    active = ((obj.get("status") or {}).get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    return {
        "rayservice": f"{namespace}/{name}",
        "applications": {
            app: {"status": s.get("status"), "message": s.get("message", "")} for app, s in active.items()
        },
    }


def _changed_apps(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    before = {a["name"]: a for a in current.get("applications", [])}
    return [a["name"] for a in desired["applications"] if before.get(a["name"]) != a]
