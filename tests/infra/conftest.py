"""The infrastructure tests' services (`tests/services.py`): PostgreSQL and an S3 endpoint."""

from tests.services import (  # noqa: F401 (fixtures)
    postgres_server,
    postgres_url,
    postgresql_database,
    postgresql_noproc_server,
    s3_endpoint,
)
