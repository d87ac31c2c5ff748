"""Federated training on the platform's side: rounds, weighted averaging, per-round checkpoints."""
