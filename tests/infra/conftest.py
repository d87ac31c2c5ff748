"""The infrastructure tests' services come from `tests/services.py` via `tests/conftest.py`."""
