"""Readers for each plain-image layout; use them through `patchveil.tenants.loaders`."""
