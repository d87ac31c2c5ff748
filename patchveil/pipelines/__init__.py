"""Prefect flows on the platform side: they drive tenant actors and never touch keys or pixels."""
