"""Attacks on the ciphers, run by whoever holds the plain images, to publish what leaks."""
