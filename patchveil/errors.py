"""Errors a user can cause and fix; the CLI turns them into one line and exit code 2."""


class PatchveilError(Exception):
    """Bad input or state that the user can correct; the message says what and how."""


class KeyStoreError(PatchveilError):
    """The key store cannot be opened or a key in it cannot be read."""


class CipherConfigError(PatchveilError):
    """A cipher was asked for with parameters it cannot honour."""


class ImageFormatError(PatchveilError):
    """Images have the wrong dtype, shape or size for the operation."""


class SourceError(PatchveilError):
    """A plain-image source (CIFAR, Tiny ImageNet, image folder, array file) cannot be read."""
