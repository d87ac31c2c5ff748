"""Side-by-side pictures of plain and encrypted images, so a person can see what a cipher hides."""

from __future__ import annotations

import numpy as np


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so 32×32 blocks stay visible as blocks."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tile equally sized uint8 images into rows, with white gaps."""
    height, width, _ = rows[0][0].shape
    columns = max(len(row) for row in rows)
    canvas = np.full(
        (len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, dtype=np.uint8
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            canvas[top : top + height, left : left + width] = image
    return canvas


def labelled_grid(
    rows: list[list[np.ndarray]], column_titles: list[str], target_width: int = 160
) -> np.ndarray:
    """A grid with a title above each column (rendered with Pillow's default font)."""
    from PIL import Image, ImageDraw

    factor = max(1, target_width // rows[0][0].shape[1])
    body = grid([[upscale(image, factor) for image in row] for row in rows])
    cell = rows[0][0].shape[1] * factor + 4
    header = Image.new("RGB", (body.shape[1], 18), "white")
    draw = ImageDraw.Draw(header)
    for c, title in enumerate(column_titles):
        draw.text((4 + c * cell, 3), title, fill="black")
    return np.concatenate([np.asarray(header), body], axis=0)


def cipher_gallery(images: np.ndarray, block_size: int) -> tuple[np.ndarray, list[str]]:
    """Plain images beside their encryption under a fresh key of every registered cipher."""
    from patchveil.tenants.ciphers import available_ciphers, create_cipher
    from patchveil.tenants.keys import CipherSpec, Key

    names = [name for name in available_ciphers() if name != "plain"]
    columns = [images]
    for name in names:
        cipher = create_cipher(
            Key.generate("gallery", CipherSpec(name, block_size, images.shape[1]))
        )
        nonces = np.arange(len(images)) if cipher.per_image else None
        columns.append(cipher.encrypt(images, nonces))
    rows = [[column[index] for column in columns] for index in range(len(images))]
    return labelled_grid(rows, ["plain", *names], target_width=96), ["plain", *names]
