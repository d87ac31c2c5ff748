"""Reproducible experiments that play every role at once (all tenants and the platform)."""
