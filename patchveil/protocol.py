"""What crosses the trust boundary between a tenant's actor and the platform (neutral: no secret).

Every message is a small frozen dataclass of plain fields (strings, numbers, tuples of them, and
the platform's own `ShardInfo`), so Ray pickles it and a reader can see from the type alone that
no key, nonce table or plain pixel travels in it. Both sides import this module; it imports
nothing of `patchveil.tenants` or `patchveil.actors`.

Federated rounds over the tenant actors will add their fit instructions and fit results here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from patchveil.datasets.shards import ShardInfo

ParamValue = float | int | str | bool
Split = Literal["train", "validation"]

# --- the input layout a cipher's ciphertext has for the model --------------------------------
InputLayout = Literal["bytes", "nibbles"]
# Channels the model reads per layout: bytes are RGB; nibbles split every byte into two 4-bit
# values (the `le` cipher shuffles those), giving 6 channels.
INPUT_CHANNELS: Mapping[InputLayout, int] = {"bytes": 3, "nibbles": 6}
# Every cipher declares its layout (`Cipher.input_layout`); the platform, which never imports a
# cipher, reads it here by cipher name. tests/test_trust_boundary.py checks the two agree.
_NIBBLE_LAYOUT_CIPHERS = frozenset({"le"})


def input_layout_of(cipher: str) -> InputLayout:
    """The layout of a cipher's ciphertext for the model (`bytes` unless it declares otherwise)."""
    return "nibbles" if cipher in _NIBBLE_LAYOUT_CIPHERS else "bytes"


# --- the actor and its key ---------------------------------------------------------------------
@dataclass(frozen=True)
class ActorDescription:
    """Which tenant, key store folder and platform home an actor serves, and its process."""

    tenant_id: str
    key_store: str
    home: str
    pid: int


@dataclass(frozen=True)
class KeyInfo:
    """The newest active key's id, version and cipher geometry: never its secret.

    `has_key` is False (and the rest empty) for a tenant without a key yet; `created` is True
    when this very call made the key.
    """

    tenant_id: str
    has_key: bool
    key_id: str = ""
    key_version: int = 0
    cipher: str = ""
    block_size: int = 0
    image_size: int = 0
    params: tuple[tuple[str, ParamValue], ...] = ()
    created_at: str = ""
    created: bool = False

    def cipher_json(self) -> dict[str, Any]:
        """The cipher as the key store and the CLI write it: name, geometry, parameters."""
        return {
            "name": self.cipher,
            "block_size": self.block_size,
            "image_size": self.image_size,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class ActorStats:
    """What an actor process has done since it (re)started."""

    tenant_id: str
    key_version: int | None
    pid: int
    started_at: str
    sources_cached: int
    shards_written: int
    rows_written: int
    queries_encrypted: int


# --- sources and shards ------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceInfo:
    """A tenant source as the platform may know it: size, classes and a keyed fingerprint."""

    source: str
    images: int
    image_size: int
    class_names: tuple[str, ...]
    labelled: bool
    fingerprint: str


@dataclass(frozen=True)
class PlannedShard:
    """One shard of a plan: a split and the source positions of its images."""

    split: Split
    indices: tuple[int, ...]


@dataclass(frozen=True)
class ShardPlan:
    """A source split, on the tenant's side, into train/validation shards of image positions."""

    fingerprint: str
    images: int
    image_size: int
    class_names: tuple[str, ...]
    shards: tuple[PlannedShard, ...]


@dataclass(frozen=True)
class ShardJob:
    """One shard for an actor to encrypt and write: source positions `indices` become samples
    `<tenant>:<index_offset + i>`, written as `shard_name` in `folder_uri`."""

    source: str
    indices: tuple[int, ...]
    folder_uri: str
    shard_name: str
    split: Split
    augment_variants: int = 0
    index_offset: int = 0
    # The fingerprint the shard was planned for; the actor refuses a source that changed since.
    fingerprint: str | None = None


@dataclass(frozen=True)
class ShardWritten:
    """A shard an actor wrote: the file (`ShardInfo`) and the split its rows belong to."""

    shard: ShardInfo
    split: Split

    @property
    def name(self) -> str:
        return self.shard.name

    @property
    def rows(self) -> int:
        return self.shard.rows


@dataclass(frozen=True)
class SampleCheck:
    """A tenant's check of a written shard: sampled rows decrypt exactly, none equals its plain
    image (only the verdicts leave the actor, never a pixel)."""

    rows: int
    checked: int
    key_version: int
    decrypts_exactly: bool
    differs_from_plain: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the inbox ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RejectedFile:
    """An inbox file that was moved to `rejected/`, and why."""

    file: str
    reason: str


@dataclass(frozen=True)
class InboxScan:
    """Inbox batches ready to encrypt (each a source) and the files rejected on the way."""

    batches: tuple[SourceInfo, ...]
    rejected: tuple[RejectedFile, ...]


__all__ = [
    "INPUT_CHANNELS",
    "ActorDescription",
    "ActorStats",
    "InboxScan",
    "InputLayout",
    "KeyInfo",
    "PlannedShard",
    "RejectedFile",
    "SampleCheck",
    "ShardJob",
    "ShardPlan",
    "ShardWritten",
    "SourceInfo",
    "input_layout_of",
]
