"""Build the Ray Serve applications from the config: one vLLM application per served model (``serving.backend``:
:mod:`arena_ops.serving.engine`, or ``ray.serve.llm.build_openai_app``) and one OpenAI-compatible router in front of
them, routed by model id (:mod:`arena_ops.serving.router` says why they are separate applications).

Only this module and :mod:`arena_ops.serving.deploy` import Ray; both do it lazily, so the config and client stay
light (Airflow workers and the battle code never import Ray or vLLM).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arena_ops.config import ArenaConfig, EngineConfig, ServedSource, StorageConfig, TinyModelConfig
from arena_ops.errors import ServingError

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
MODEL_CACHE = Path(os.environ.get("ARENA_MODEL_CACHE", Path.home() / ".cache" / "arena-flywheel" / "models"))


@dataclass(frozen=True)
class ServedModel:
    """One model to deploy: its id (the ``model`` field of requests), weights location and engine settings."""

    name: str
    path: str
    engine: EngineConfig
    tiny: TinyModelConfig | None = None
    # The content of new target weights (arena_ops.revisions): a stage retrained into the same URI is new weights,
    # and a changed user_config is what makes the running replica load them.
    revision: str | None = None


def served_models(cfg: ArenaConfig, target_path: str | None = None) -> list[ServedModel]:
    """Target (optionally with this iteration's weights), competitors, judge and the test sets' rater, where served;
    unique by name."""
    out: dict[str, ServedModel] = {}
    for role, spec in [
        ("target", cfg.models.target),
        *[("competitor", c) for c in cfg.models.competitors],
        ("judge", cfg.models.judge),
        *([("rater", cfg.testset.rater)] if cfg.testset.rater else []),
    ]:
        if not isinstance(spec.source, ServedSource):
            continue
        new_weights = role == "target" and target_path and target_path != spec.source.path
        path = target_path if new_weights else spec.source.path
        model = ServedModel(spec.name, path, spec.source.engine, None if new_weights else spec.source.tiny)
        if new_weights:
            from arena_ops.revisions import weights_revision

            rev = weights_revision(path, cfg.storage)
            if rev.startswith("sha256:"):  # content read from here; a bare path changes with the path already
                model = replace(model, revision=rev)
        if spec.name in out and out[spec.name] != model:
            raise ServingError(f"model name {spec.name!r} is configured twice with different sources")
        out[spec.name] = model
    if not out:
        raise ServingError("no model has source kind 'served': nothing to deploy")
    slugs = [model_slug(n) for n in out]
    if len(set(slugs)) != len(slugs):
        raise ServingError(f"model names {sorted(out)} collide once made URL-safe ({slugs}); rename one")
    return list(out.values())


def local_model_dir(model: ServedModel, storage: StorageConfig) -> str:
    """A local directory for the weights: local paths as they are (a configured tiny model is built when missing),
    ``s3://`` prefixes downloaded to a cache (keyed by the URI, fetched once), anything else is a Hugging Face id."""
    path = model.path
    if path.startswith("s3://"):
        return _download(path, storage)
    path = path.removeprefix("file://")  # a checkpoint in a local-directory artifact store
    if not path.startswith("/"):
        return path  # a Hugging Face id
    if not Path(path).exists():
        if model.tiny is None:
            raise ServingError(f"model {model.name!r}: weights directory {path} does not exist")
        from arena_ops.tiny_model import build_tiny_chat_model

        build_tiny_chat_model(path, arch=model.tiny.arch, seed=model.tiny.seed)
    return path


def _download(path: str, storage: StorageConfig) -> str:
    """The weights at ``path`` in a local cache keyed by the URI *and its content*: a URI is not a version (a stack
    started afresh, or a round rerun, writes new weights under the same ``iter=<i>/model/<stage>``), so the key
    carries a fingerprint of what is there now — the artifact's manifest (its files' sha256), else the listing's
    names, sizes and times for weights uploaded by hand. Other versions of the same URI are removed."""
    import pyarrow.fs as pafs

    from arena_ops.store import s3_credentials

    fs = pafs.S3FileSystem(**s3_credentials(storage.s3, path))
    src = path[len("s3://") :].strip("/")
    try:
        version = _fingerprint(fs, src)
    except OSError as exc:
        raise ServingError(f"{path}: cannot read the model's listing: {exc}") from exc
    home = MODEL_CACHE / src
    dest = home / f"@{version}"
    if (dest / ".arena-complete").exists():
        return str(dest)
    tmp = home / f".partial-{version}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        pafs.copy_files(src, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServingError(f"{path}: cannot download model weights: {exc}") from exc
    (tmp / ".arena-complete").touch()
    try:
        tmp.rename(dest)
    except OSError:  # another process finished the same version first
        shutil.rmtree(tmp, ignore_errors=True)
    for old in home.iterdir():  # other versions (and the unversioned layout of before) take gigabytes each
        if old != dest and not old.name.startswith(".partial-"):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    return str(dest)


def _fingerprint(fs: Any, src: str) -> str:
    import pyarrow.fs as pafs

    try:
        with fs.open_input_stream(f"{src}/_MANIFEST.json") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except FileNotFoundError:
        pass
    infos = fs.get_file_info(pafs.FileSelector(src, recursive=True))
    if not infos:
        raise FileNotFoundError(f"nothing at s3://{src}")
    listing = sorted((i.path, i.size, str(i.mtime_ns)) for i in infos if i.type == pafs.FileType.File)
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def engine_kwargs(engine: EngineConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "dtype": engine.dtype,
        "max_model_len": engine.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "enforce_eager": engine.enforce_eager,
        # Bounded on CPU too: vLLM's CPU default claims ~90% of RAM.
        "kv_cache_memory_bytes": int(engine.kv_cache_gib * 2**30),
    }
    if engine.device == "cpu":
        kwargs["distributed_executor_backend"] = "mp"
    return kwargs


def llm_options(model: ServedModel, model_source: Any, cpu_threads_bind: str | None = None) -> dict[str, Any]:
    """The ``LLMConfig`` fields of one model (backend ``ray-serve-llm``), as plain data: what :func:`serve_config`
    declares (the Helm chart's RayService renders the same, see helm/arena-flywheel)."""
    e = model.engine
    options: dict[str, Any] = {
        "model_loading_config": {"model_id": model.name, "model_source": model_source},
        "engine_kwargs": engine_kwargs(e),
        "deployment_config": {
            "autoscaling_config": {
                "min_replicas": e.min_replicas,
                "max_replicas": e.max_replicas,
                "initial_replicas": max(e.min_replicas, 1),
            },
        },
    }
    if e.device == "cpu":
        env = {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(e.kv_cache_gib + 0.5)))}  # half up, as Helm's round
        if cpu_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind
        # ray.serve.llm assumes GPUs unless told otherwise (measured: see STACK_FACTS).
        options["accelerator_config"] = {"kind": "cpu"}
        options["placement_group_config"] = {"bundles": [{"CPU": e.cpus_per_replica, **e.ray_resources}]}
        options["runtime_env"] = {"env_vars": env}
    return options


ROUTER_APP = "arena-router"
ROUTER_IMPORT_PATH = "arena_ops.serving.router:build_router"
ENGINE_IMPORT_PATH = "arena_ops.serving.engine:build_engine_app"
ENGINE_DEPLOYMENT = "VLLMServer"  # arena_ops.serving.engine.DEPLOYMENT (that module imports Ray; this one does not)


def model_slug(name: str) -> str:
    return _SLUG.sub("-", name).strip("-")


def model_route(name: str) -> str:
    return f"/m/{model_slug(name)}"


def model_app_name(name: str) -> str:
    return f"arena-model-{model_slug(name)}"


def engine_app(cfg: ArenaConfig, m: ServedModel, cpu_threads_bind: str | None = None) -> dict[str, Any]:
    """One model's application (backend ``vllm``, :mod:`arena_ops.serving.engine`) in a declarative Serve config.
    Engine settings are passed as the config states them (the replica fills in the defaults); the weights
    are the deployment's ``user_config``, so a new target checkpoint reconfigures the running replicas."""
    e = m.engine
    args: dict[str, Any] = {"model_id": m.name, "engine": e.model_dump(mode="json", exclude_unset=True)}
    if cpu_threads_bind:
        args["cpu_threads_bind"] = cpu_threads_bind
    weights: dict[str, Any] = {"path": m.path}
    if m.tiny is not None:
        weights["tiny"] = m.tiny.model_dump(mode="json", exclude_unset=True)
    if m.revision is not None:
        weights["revision"] = m.revision
    s3 = cfg.storage.s3.model_dump(mode="json", exclude_unset=True)
    if s3:  # what fetching s3:// weights needs; in user_config, so that a change of it restarts nothing
        weights["s3"] = s3
    actor: dict[str, Any] = {"num_cpus": e.cpus_per_replica}
    if e.ray_resources:
        actor["resources"] = dict(e.ray_resources)
    if e.device == "gpu":
        actor["num_gpus"] = e.tensor_parallel_size
    deployment = {
        "name": ENGINE_DEPLOYMENT,
        "ray_actor_options": actor,
        "autoscaling_config": {
            "min_replicas": e.min_replicas,
            "max_replicas": e.max_replicas,
            "initial_replicas": max(e.min_replicas, 1),
        },
        "user_config": weights,
    }
    return {
        "name": model_app_name(m.name),
        "route_prefix": model_route(m.name),
        "import_path": ENGINE_IMPORT_PATH,
        "args": args,
        "deployments": [deployment],
    }


def ray_llm_app(m: ServedModel, model_source: Any, cpu_threads_bind: str | None = None) -> dict[str, Any]:
    """One model's application (backend ``ray-serve-llm``: ``ray.serve.llm.build_openai_app``)."""
    return {
        "name": model_app_name(m.name),
        "route_prefix": model_route(m.name),
        "import_path": "ray.serve.llm:build_openai_app",
        "args": {"llm_configs": [llm_options(m, model_source, cpu_threads_bind)]},
    }


def router_upstreams(cfg: ArenaConfig, models: list[ServedModel]) -> dict[str, Any]:
    """Model id → where the router sends its requests. Backend ``vllm``: the model's application, called through a
    deployment handle (no second HTTP hop). ``ray-serve-llm``: its URL through the Serve proxy on the router's own
    node (Serve runs a proxy on every node)."""
    if cfg.serving.backend == "vllm":
        return {m.name: {"app": model_app_name(m.name)} for m in models}
    base = f"http://127.0.0.1:{cfg.serving.port}"
    return {m.name: base + model_route(m.name) for m in models}


def serve_config(
    cfg: ArenaConfig, target_path: str | None = None, cpu_threads_bind: str | None = None, host: str = "0.0.0.0"
) -> dict[str, Any]:
    """The declarative Serve config (``ServeDeploySchema``) of the whole serving layer — one engine application per
    served model plus the router: what :func:`arena_ops.serving.deploy.up` applies and what a KubeRay RayService's
    ``serveConfigV2`` holds (the Helm chart renders the same). Weights stay where the config says and each replica
    fetches them on its node (``s3://`` prefixes: the engine app downloads them; ``ray.serve.llm`` as a
    ``bucket_uri``); Hugging Face ids and paths are passed as they are. ``target_path``: this round's target weights,
    as for ``up``; ``cpu_threads_bind``: vLLM's CPU thread binding (a local head binds every core)."""
    models = served_models(cfg, target_path)
    if cfg.serving.backend == "vllm":
        apps = [engine_app(cfg, m, cpu_threads_bind) for m in models]
    else:
        apps = [ray_llm_app(m, _declared_source(m.path), cpu_threads_bind) for m in models]
    apps.append(
        {
            "name": ROUTER_APP,
            "route_prefix": cfg.serving.route_prefix,
            "import_path": ROUTER_IMPORT_PATH,
            "args": {"upstreams": router_upstreams(cfg, models)},
        }
    )
    return {
        "proxy_location": cfg.serving.proxy_location,
        "http_options": {"host": host, "port": cfg.serving.port},
        "applications": apps,
    }


def _declared_source(path: str) -> Any:
    return {"bucket_uri": path} if path.startswith("s3://") else path.removeprefix("file://")
