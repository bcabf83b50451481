"""The exception hierarchy: one base class, one subclass per kind of failure."""

from __future__ import annotations


class ArenaError(Exception):
    """Base class of every error raised on purpose by arena_ops."""


class ConfigError(ArenaError):
    """A configuration file is missing, unparsable or invalid; the message names the file and key."""


class SlicesExhaustedError(ConfigError):
    """An iteration needs slices beyond data.num_shards (the paper schedule uses three per iteration)."""


class RoundStartedError(ConfigError):
    """A started round was resolved again with a changed config or plan: its record is written once."""


class StoreError(ArenaError):
    """The artifact store could not do what was asked; the message names the URI."""


class StoreURIError(StoreError):
    """A storage URI is malformed or uses an unsupported scheme."""


class MissingCredentialsError(StoreError):
    """An s3:// store was asked for but no credentials could be found."""


class ArtifactNotFoundError(StoreError):
    """No object, or no committed artifact, exists at the given location."""


class NotCommittedError(ArtifactNotFoundError):
    """An artifact directory exists but its manifest was never written (an interrupted or running write)."""


class StoreConflictError(StoreError):
    """Another writer took over an artifact while this one was writing it: this writer's commit is abandoned."""


class IntegrityError(StoreError):
    """An object's bytes do not match the sha256 recorded in its manifest."""


class RatingError(ArenaError, ValueError):
    """Battles or leaderboards that cannot be rated or compared; the message names the file or model."""


class ServingError(ArenaError):
    """Models could not be deployed, reached or answered; the message names the model and endpoint."""


class EndpointFailing(ServingError):
    """Every recent request to an endpoint was refused the same way (a wrong base URL, model id or key): the run stops
    with that error instead of recording each refusal as one item's outcome."""


class DataError(ArenaError):
    """An instruction file or dataset cannot be read or built; the message names the file or artifact."""


class PartitionUnavailableError(DataError):
    """A date's partition is missing, empty or too small for the schedule: the day is skipped, nothing is written."""


class BattleError(ArenaError):
    """Generation or judging could not complete (after retries); the message says which units failed."""


class TrainingError(ArenaError):
    """Training data cannot be built, a config is invalid, or a launched job failed (with its log tail)."""
