"""Named locks held in the registry's PostgreSQL database, so they hold across machines.

A lock is a transaction-scoped advisory lock (`pg_advisory_xact_lock`) on a connection of its
own: PostgreSQL releases it when the transaction ends, and also when the holder's process or
machine dies (its connection drops), so a crashed publisher never leaves a dataset locked. SQLite
has no such locks; a SQLite registry lives on one machine and the platform keeps using file
locks there (`pipelines.publishing.platform_locks`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

LOCKING_BACKENDS = ("postgresql",)


def has_database_locks(url: str) -> bool:
    """True when the registry database at `url` can hold cluster-wide locks (PostgreSQL)."""
    return make_url(url).get_backend_name() in LOCKING_BACKENDS


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of a lock name (stable across processes and runs).

    SHA-256 rather than PostgreSQL's `hashtext`, whose value is not promised across versions.
    """
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def take_locks(connection: Connection, names: Iterable[str]) -> None:
    """Wait for each named lock in sorted order (a fixed order cannot deadlock); they are held
    until the connection's current transaction ends."""
    for name in sorted(set(names)):
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})


@contextlib.contextmanager
def engine_locks(engine: Engine, names: Iterable[str]) -> Iterator[None]:
    """Hold the named locks for the `with` block on one connection of `engine`.

    The transaction that holds them stays idle while the block works: a server setting
    `idle_in_transaction_session_timeout` shorter than a publishing would end it (and the lock).
    """
    with engine.connect() as connection, connection.begin():
        take_locks(connection, names)
        yield


@contextlib.contextmanager
def database_locks(url: str, names: Iterable[str]) -> Iterator[None]:
    """`engine_locks` on a connection opened for this block alone and closed after it."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine_locks(engine, names):
            yield
    finally:
        engine.dispose()
