"""The registry tests run against SQLite and a real PostgreSQL (`tests/services.py`)."""

from tests.services import (  # noqa: F401 (fixtures)
    postgres_server,
    postgres_url,
    postgresql_database,
    postgresql_noproc_server,
)
