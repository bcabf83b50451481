"""The Helm chart's ``values.schema.json``, generated so that it cannot drift: the chart's own keys are declared here
(``additionalProperties: false`` at every level), and ``flywheel.config`` is the JSON schema of
:class:`arena_ops.config.ArenaConfig` itself — a config that the DAGs would reject fails ``helm install`` first.

``python -m arena_ops.helm_schema`` rewrites helm/arena-flywheel/values.schema.json; a test checks it is current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from arena_ops.config import ArenaConfig

CHART = Path(__file__).resolve().parents[1] / "helm" / "arena-flywheel"


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else sorted(properties),
        "additionalProperties": False,
        **extra,
    }


_STR = {"type": "string"}
_NONEMPTY = {"type": "string", "minLength": 1}
_INT0 = {"type": "integer", "minimum": 0}
_MAP = {"type": "object"}  # Kubernetes objects (resources, nodeSelector) are validated by the API server
_TOLERATIONS = {"type": "array", "items": {"type": "object"}}
_PLACEMENT = {"resources": _MAP, "nodeSelector": _MAP, "tolerations": _TOLERATIONS}


def _ray_cluster(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    workers = _obj(
        {"groupName": _NONEMPTY, "replicas": _INT0, "minReplicas": _INT0, "maxReplicas": _INT0, **_PLACEMENT}
    )
    return _obj(
        {
            "enabled": {"type": "boolean"},
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 40},
            "rayVersion": _NONEMPTY,
            "head": _obj(_PLACEMENT),
            "workers": workers,
            **(extra or {}),
        }
    )


def build_schema() -> dict[str, Any]:
    config = ArenaConfig.model_json_schema()
    image = _obj({"repository": _NONEMPTY, "tag": _NONEMPTY})
    schema = _obj(
        {
            "images": _obj(
                {
                    "airflow": image,
                    "ray": image,
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    "pullSecrets": {"type": "array", "items": _NONEMPTY},
                }
            ),
            "flywheel": _obj(
                {
                    "configMapName": _NONEMPTY,
                    "mountPath": {"type": "string", "pattern": "^/"},
                    "config": {"$ref": "#/$defs/ArenaConfig"},
                }
            ),
            "secrets": _obj({"s3": _NONEMPTY, "modelEnv": _STR}),
            "rayService": _ray_cluster({"editors": {"type": "array", "items": _NONEMPTY}}),
            "rayTraining": _ray_cluster({"shmSize": _NONEMPTY}),
            "minio": _obj(
                {
                    "enabled": {"type": "boolean"},
                    "image": _NONEMPTY,
                    "mcImage": _NONEMPTY,
                    "existingSecret": _NONEMPTY,
                    "bucket": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"},
                    "persistence": _obj({"size": _NONEMPTY, "storageClass": _STR}),
                    **_PLACEMENT,
                }
            ),
            # Subcharts: their own values, validated by their own schemas; only the switch is ours.
            "airflow": {"type": "object", "properties": {"enabled": {"type": "boolean"}}, "required": ["enabled"]},
            "kuberay-operator": {
                "type": "object",
                "properties": {"enabled": {"type": "boolean"}},
                "required": ["enabled"],
            },
        },
        # Helm adds "global" for subcharts.
        required=["images", "flywheel", "secrets", "rayService", "rayTraining", "minio", "airflow", "kuberay-operator"],
        **{"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "arena-flywheel values"},
    )
    schema["properties"]["global"] = {"type": "object"}
    schema["$defs"] = {**config.pop("$defs"), "ArenaConfig": config}
    return schema


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    path = CHART / "values.schema.json"
    path.write_text(render())
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
