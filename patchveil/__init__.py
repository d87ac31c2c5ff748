"""patchveil: one shared Vision Transformer trained on images each tenant encrypted with its own key."""

__version__ = "0.1.0"
