"""The tenant's side of the trust boundary: keys, key store, ciphers, plain-image loaders."""
