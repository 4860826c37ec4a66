"""What every rule looks at: the release, the snapshot, the requests, and the
collections they name."""

from __future__ import annotations

from dataclasses import dataclass

from controller.engine.state import P_VALIDATED_HASH, CollectionState, Observation
from controller.engine.step import Intents
from controller.spec import EmbeddingRelease


@dataclass(frozen=True)
class Situation:
    release: EmbeddingRelease
    obs: Observation
    intents: Intents
    desired: str  # the collection this spec.version builds
    cand: CollectionState | None  # that collection, when it exists
    live: CollectionState | None  # where the alias points, when it points anywhere

    @classmethod
    def of(cls, release: EmbeddingRelease, obs: Observation, intents: Intents) -> Situation:
        desired = release.collection_name()
        return cls(release, obs, intents, desired, obs.collections.get(desired), obs.live)

    @property
    def version(self) -> str:
        return self.release.spec.version

    @property
    def name(self) -> str:
        """The release's name, as the CLI commands in messages take it."""
        return self.release.metadata.name

    def stale(self, cand: CollectionState) -> bool:
        """Thresholds changed since the checks ran: judge again (never a kept, once-live version)."""
        return cand.get(P_VALIDATED_HASH) != self.release.validation_hash() and not cand.was_live
