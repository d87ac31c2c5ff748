"""Tests for the `patchveil` command: keys, encrypt/decrypt round trips, bad input, fast start."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchveil.cli import main
from patchveil.tenants.ciphers import available_ciphers, create_cipher, key_space_bits
from patchveil.tenants.keys import CipherSpec, Key
from patchveil.tenants.keystore import PASSPHRASE_ENV, RESERVED_NONCE_BASE, KeyStore
from patchveil.tenants.preview import upscale
from tests.helpers import assert_no_key_material

REPO = Path(__file__).resolve().parents[1]
SIZE, BLOCK = 16, 4
# tenant id → cipher of its key in the shared store; `disposable` draws a transform per image.
TENANTS = {"hospital": "conventional", "factory": "disposable"}


# --- fixtures and helpers -------------------------------------------------------------------
@dataclass(frozen=True)
class SharedStore:
    """One development-mode key store for the whole module (scrypt costs ~0.1 s per open)."""

    root: Path
    keys: dict[str, Key]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedStore]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(PASSPHRASE_ENV, raising=False)
        root = tmp_path_factory.mktemp("cli") / "store"
        keystore = KeyStore(root)
        for tenant_id, cipher in TENANTS.items():
            keystore.create(tenant_id, CipherSpec(cipher, BLOCK, SIZE))
        # Read back the way any user of the store would, to search outputs for the secrets.
        yield SharedStore(root, {tenant_id: keystore.load(tenant_id) for tenant_id in TENANTS})


@pytest.fixture(autouse=True)
def development_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def images() -> np.ndarray:
    batch = np.random.default_rng(7).integers(0, 256, size=(3, SIZE, SIZE, 3), dtype=np.uint8)
    batch[2] = batch[0]  # a repeated image: per-image ciphers must still encrypt it differently
    return batch


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> Outcome:
    """Run the command in-process and capture what it printed."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_refused(outcome: Outcome, *fragments: str) -> None:
    """Exit 2, nothing on stdout, exactly one `patchveil: error:` line naming every fragment."""
    assert outcome.code == 2, outcome
    assert outcome.out == ""
    assert outcome.err.startswith("patchveil: error: ") and outcome.err.endswith("\n")
    assert outcome.err.count("\n") == 1, outcome.err
    assert "Traceback" not in outcome.err
    for fragment in fragments:
        assert fragment in outcome.err, (fragment, outcome.err)


def store_args(root: Path, tenant_id: str) -> list[object]:
    return ["--store", root, "--tenant", tenant_id]


def keygen_args(root: Path, tenant_id: str, cipher: str = "conventional") -> list[object]:
    return [
        "keygen",
        *store_args(root, tenant_id),
        *("--cipher", cipher, "--block-size", BLOCK, "--image-size", SIZE),
    ]


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path


def read_pixels(path: Path) -> np.ndarray:
    """Images at `path` ([N, H, W, 3]), read without patchveil: .npy, .npz, an image or a folder."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive["images"]
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return np.stack([np.asarray(Image.open(file).convert("RGB")) for file in files])


def stored_nonces(path: Path) -> np.ndarray | None:
    """The per-image nonces an encrypted file carries (None for a cipher without them)."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive["nonces"] if "nonces" in archive.files else None
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    nonces = [json.loads(Image.open(file).text["patchveil"])["nonce"] for file in files]
    return None if nonces[0] is None else np.array(nonces, dtype=np.int64)


def write_input(kind: str, folder: Path, images: np.ndarray) -> tuple[Path, Path, np.ndarray]:
    """An input of `kind` under `folder`: (its path, the path its ciphertext goes to, images)."""
    if kind == "npy":
        path = folder / "plain.npy"
        np.save(path, images)
        return path, folder / "cipher.npz", images
    if kind == "png":
        return write_png(folder / "plain.png", images[0]), folder / "cipher.png", images[:1]
    # Folder files are taken in name order, whatever their suffix (a lossless .bmp included).
    names = ["a.png", "b.bmp", "c.png"]
    for name, image in zip(names, images, strict=True):
        (folder / "plain").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "plain" / name)
    return folder / "plain", folder / "cipher", images


# --- keygen and keys ------------------------------------------------------------------------
def test_keygen_prints_id_and_version_but_never_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    created = run(capsys, *keygen_args(root, "hospital"))
    assert created.code == 0, created
    key = KeyStore(root).load("hospital")
    assert key.key_id in created.out and "version 1" in created.out
    listed = run(capsys, "keys", "list", *store_args(root, "hospital"))
    assert listed.code == 0
    (row,) = json.loads(listed.out)
    assert (row["key_id"], row["version"], row["status"]) == (key.key_id, 1, "active")
    assert row["cipher"]["block_size"] == BLOCK and row["cipher"]["image_size"] == SIZE
    assert_no_key_material(key, [created.out, created.err, listed.out, listed.err])

    again = run(capsys, *keygen_args(root, "hospital"))
    assert_refused(again, "'hospital' already has a key", "rotate")
    assert KeyStore(root).load("hospital") == key  # the first key survives


def test_keygen_refuses_a_block_size_that_does_not_divide_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    outcome = run(
        capsys,
        *("keygen", *store_args(root, "hospital"), "--cipher", "conventional"),
        *("--block-size", 5, "--image-size", 32),
    )
    assert_refused(outcome, "block size 5", "image size 32")
    assert KeyStore(root).versions("hospital") == []


def test_keygen_refuses_an_unknown_cipher_and_lists_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    outcome = run(capsys, *keygen_args(root, "hospital", cipher="rot13"))
    assert_refused(outcome, "unknown cipher 'rot13'", *available_ciphers())
    assert KeyStore(root).versions("hospital") == []


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("block_fraction=lots", "must be a float"),
        ("block_fraction=1.5", "[0, 1]"),
        ("colour=red", "its parameters are: block_fraction, flip_fraction, pixel_fraction"),
    ],
)
def test_keygen_refuses_bad_cipher_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], param: str, expected: str
) -> None:
    root = tmp_path / "store"
    outcome = run(capsys, *keygen_args(root, "hospital", "restricted"), "--param", param)
    assert_refused(outcome, expected)
    assert KeyStore(root).versions("hospital") == []


def test_keygen_accepts_cipher_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    outcome = run(
        capsys, *keygen_args(root, "hospital", "restricted"), "--param", "pixel_fraction=0.5"
    )
    assert outcome.code == 0
    assert KeyStore(root).load("hospital").spec.param_dict["pixel_fraction"] == 0.5


def test_keygen_refuses_a_param_without_a_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([str(arg) for arg in keygen_args(tmp_path / "store", "hospital")] + ["--param", "x"])
    assert stop.value.code == 2
    assert "--param takes name=value, got 'x'" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_rotate_keeps_old_ciphertext_readable_until_retired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    root, data = tmp_path / "store", tmp_path / "data"
    data.mkdir()
    assert run(capsys, *keygen_args(root, "hospital")).code == 0
    np.save(data / "plain.npy", images)
    tenant = store_args(root, "hospital")
    assert (
        run(capsys, "encrypt", *tenant, "--in", data / "plain.npy", "--out", data / "v1.npz").code
        == 0
    )

    rotated = run(capsys, "keys", "rotate", *tenant)
    assert rotated.code == 0 and "version 2 is now active" in rotated.out
    keys = [KeyStore(root).load("hospital", version) for version in (1, 2)]
    encrypted = run(
        capsys, "encrypt", *tenant, "--in", data / "plain.npy", "--out", data / "v2.npz"
    )
    assert "key version 2" in encrypted.out
    assert not np.array_equal(read_pixels(data / "v1.npz"), read_pixels(data / "v2.npz"))

    # Each file names its key version: the old one decrypts with version 1, without being told.
    old = run(capsys, "decrypt", *tenant, "--in", data / "v1.npz", "--out", data / "back1.npy")
    assert old.code == 0 and "key version(s) 1" in old.out
    assert np.array_equal(np.load(data / "back1.npy"), images)
    run(capsys, "decrypt", *tenant, "--in", data / "v2.npz", "--out", data / "back2.npy")
    assert np.array_equal(np.load(data / "back2.npy"), images)

    listed = run(capsys, "keys", "list", *tenant)
    assert [row["version"] for row in json.loads(listed.out)] == [1, 2]
    assert_refused(run(capsys, "keys", "retire", *tenant), "--version")
    retired = run(capsys, "keys", "retire", *tenant, "--version", 1)
    assert retired.code == 0 and "retired" in retired.out
    after = run(capsys, "decrypt", *tenant, "--in", data / "v1.npz", "--out", data / "late.npy")
    assert_refused(after, "version 1", "retired")
    assert not (data / "late.npy").exists()
    assert [row["status"] for row in json.loads(run(capsys, "keys", "list", *tenant).out)] == [
        "retired",
        "active",
    ]
    assert_no_key_material(keys, [listed.out, rotated.out, retired.out, data, root / "hospital"])


def test_keys_list_of_an_unknown_tenant_is_an_error(
    store: SharedStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(run(capsys, "keys", "list", *store_args(store.root, "nobody")), "'nobody'")


# --- encrypt and decrypt --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["npy", "png", "folder"])
@pytest.mark.parametrize("tenant_id", sorted(TENANTS))
def test_encrypt_then_decrypt_gives_back_the_exact_images(
    store: SharedStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    images: np.ndarray,
    kind: str,
    tenant_id: str,
) -> None:
    plain_path, cipher_path, plain = write_input(kind, tmp_path, images)
    back_path = tmp_path / ("back" + plain_path.suffix)
    tenant = store_args(store.root, tenant_id)
    encrypted = run(capsys, "encrypt", *tenant, "--in", plain_path, "--out", cipher_path)
    assert encrypted.code == 0, encrypted
    assert f"encrypted {len(plain)} image(s) with key version 1" in encrypted.out
    ciphertext = read_pixels(cipher_path)
    assert ciphertext.shape == plain.shape and ciphertext.dtype == np.uint8
    assert not np.array_equal(ciphertext, plain)

    key = store.keys[tenant_id]
    cipher = create_cipher(key)
    # A per-image cipher reserves fresh nonces from the tenant's store; the output carries them.
    nonces = stored_nonces(cipher_path)
    assert (nonces is not None) == cipher.per_image
    if nonces is not None:
        assert len(set(nonces.tolist())) == len(plain) and nonces.min() >= RESERVED_NONCE_BASE
    assert np.array_equal(ciphertext, cipher.encrypt(plain, nonces))
    if kind != "png":  # images 0 and 2 are equal: only a per-image cipher tells them apart
        assert np.array_equal(ciphertext[0], ciphertext[2]) == (not cipher.per_image)

    decrypted = run(capsys, "decrypt", *tenant, "--in", cipher_path, "--out", back_path)
    assert decrypted.code == 0, decrypted
    assert np.array_equal(read_pixels(back_path), plain)
    if kind == "npy":
        assert back_path.read_bytes() == plain_path.read_bytes()
    if kind == "folder":
        assert sorted(p.name for p in cipher_path.iterdir()) == ["a.png", "b.png", "c.png"]
    outputs = [cipher_path, back_path, encrypted.out, encrypted.err, decrypted.out, decrypted.err]
    assert_no_key_material(list(store.keys.values()), outputs)
    # Nothing but the inputs and outputs: no temporary file or staging folder left over.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {plain_path.name, cipher_path.name, back_path.name}
    )


def test_encrypt_into_an_existing_empty_folder(
    store: SharedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    plain_path, cipher_path, _ = write_input("folder", tmp_path, images)
    cipher_path.mkdir()
    outcome = run(
        capsys,
        "encrypt",
        *store_args(store.root, "hospital"),
        "--in",
        plain_path,
        "--out",
        cipher_path,
    )
    assert outcome.code == 0
    assert len(list(cipher_path.iterdir())) == len(images)


def _npy(array: np.ndarray, out_name: str = "cipher.npz") -> Callable[[Path], tuple[Path, Path]]:
    def make(folder: Path) -> tuple[Path, Path]:
        np.save(folder / "plain.npy", array)
        return folder / "plain.npy", folder / "out" / out_name

    return make


def _png(size: int, out_name: str = "cipher.png") -> Callable[[Path], tuple[Path, Path]]:
    def make(folder: Path) -> tuple[Path, Path]:
        image = np.zeros((size, size, 3), np.uint8)
        return write_png(folder / "plain.png", image), folder / "out" / out_name

    return make


def _corrupt_png(folder: Path) -> tuple[Path, Path]:
    (folder / "plain.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder / "plain.png", folder / "out" / "cipher.png"


def _missing(folder: Path) -> tuple[Path, Path]:
    return folder / "nowhere.npy", folder / "out" / "cipher.npy"


def _text_file(folder: Path) -> tuple[Path, Path]:
    (folder / "notes.txt").write_text("no images here")
    return folder / "notes.txt", folder / "out" / "cipher.npy"


def _empty_folder(folder: Path) -> tuple[Path, Path]:
    (folder / "plain").mkdir()
    return folder / "plain", folder / "out" / "cipher"


def _mixed_sizes(folder: Path) -> tuple[Path, Path]:
    write_png(folder / "plain" / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    write_png(folder / "plain" / "b.png", np.zeros((8, 8, 3), np.uint8))
    return folder / "plain", folder / "out" / "cipher"


def _shared_stems(folder: Path) -> tuple[Path, Path]:
    write_png(folder / "plain" / "scan.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    Image.fromarray(np.ones((SIZE, SIZE, 3), np.uint8)).save(folder / "plain" / "scan.bmp")
    return folder / "plain", folder / "out" / "cipher"


def _output_is_a_folder(folder: Path) -> tuple[Path, Path]:
    np.save(folder / "plain.npy", np.zeros((1, SIZE, SIZE, 3), np.uint8))
    (folder / "out" / "cipher.npz").mkdir(parents=True)
    return folder / "plain.npy", folder / "out" / "cipher.npz"


RNG = np.random.default_rng(3)
BAD_INPUTS = {
    "missing input": (_missing, "hospital", ["nowhere.npy", "does not exist"]),
    "float npy": (_npy(RNG.random((2, SIZE, SIZE, 3))), "hospital", ["uint8", "float64"]),
    "wrong shape": (
        _npy(np.zeros((2, SIZE, SIZE), np.uint8)),
        "hospital",
        ["[N, H, W, 3]", "[2, 16, 16]"],
    ),
    "four channels": (_npy(np.zeros((2, SIZE, SIZE, 4), np.uint8)), "hospital", ["[N, H, W, 3]"]),
    "npy too small for the key": (
        _npy(np.zeros((2, 8, 8, 3), np.uint8)),
        "hospital",
        ["image size 16", "[2, 8, 8, 3]"],
    ),
    "image too large for the key": (_png(32), "factory", ["image size 16", "[1, 32, 32, 3]"]),
    "corrupt png": (_corrupt_png, "hospital", ["plain.png", "not a readable image"]),
    "not an image": (_text_file, "hospital", ["notes.txt", "expected a .npy file"]),
    "empty folder": (_empty_folder, "hospital", ["holds no image files"]),
    "folder of mixed sizes": (_mixed_sizes, "hospital", ["different sizes"]),
    "two images, one output name": (_shared_stems, "hospital", ["scan.bmp, scan.png", "scan.png"]),
    "unknown tenant": (_png(SIZE), "nobody", ["no key for tenant 'nobody'"]),
    "invalid tenant id": (_png(SIZE), "../hospital", ["tenant id '../hospital' is not valid"]),
    "lossy output": (_png(SIZE, "cipher.jpg"), "hospital", ["cipher.jpg", "lossless PNG"]),
    "npy to png": (
        _npy(np.zeros((1, SIZE, SIZE, 3), np.uint8), "cipher.png"),
        "hospital",
        ["written as .npz", "not cipher.png", "cipher.npz"],
    ),
    "npy to npy": (
        _npy(np.zeros((1, SIZE, SIZE, 3), np.uint8), "cipher.npy"),
        "hospital",
        ["written as .npz", "cipher.npz"],
    ),
    "output is a folder": (_output_is_a_folder, "hospital", ["cipher.npz"]),
}


@pytest.mark.parametrize("command", ["encrypt"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_output(
    store: SharedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, command: str
) -> None:
    make, tenant_id, fragments = BAD_INPUTS[case]
    plain_path, out_path = make(tmp_path)
    out_dir = out_path.parent
    out_dir.mkdir(exist_ok=True)
    before = sorted(out_dir.iterdir())
    outcome = run(
        capsys, command, *store_args(store.root, tenant_id), "--in", plain_path, "--out", out_path
    )
    assert_refused(outcome, *fragments)
    # No output, and no temporary file or staging folder beside where it would have gone.
    assert sorted(out_dir.iterdir()) == before
    assert_no_key_material(list(store.keys.values()), outcome.err)


def test_a_non_empty_output_folder_is_refused_and_left_alone(
    store: SharedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    plain_path, cipher_path, _ = write_input("folder", tmp_path, images)
    cipher_path.mkdir()
    (cipher_path / "earlier.png").write_bytes(b"keep me")
    before = sorted(tmp_path.iterdir())
    outcome = run(
        capsys,
        "encrypt",
        *store_args(store.root, "hospital"),
        "--in",
        plain_path,
        "--out",
        cipher_path,
    )
    assert_refused(outcome, str(cipher_path), "not empty")
    assert [p.name for p in cipher_path.iterdir()] == ["earlier.png"]
    assert (cipher_path / "earlier.png").read_bytes() == b"keep me"
    assert sorted(tmp_path.iterdir()) == before


def test_a_key_version_that_does_not_exist(
    store: SharedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    np.save(tmp_path / "plain.npy", images)
    outcome = run(
        capsys,
        *("encrypt", *store_args(store.root, "hospital"), "--key-version", 7),
        *("--in", tmp_path / "plain.npy", "--out", tmp_path / "cipher.npz"),
    )
    assert_refused(outcome, "no key version 7")
    assert not (tmp_path / "cipher.npz").exists()


def test_wrong_or_missing_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, passphrase = tmp_path / "store", "correct horse battery staple"
    monkeypatch.setenv(PASSPHRASE_ENV, passphrase)
    assert run(capsys, *keygen_args(root, "hospital")).code == 0
    key = KeyStore(root).load("hospital")
    write_png(tmp_path / "in" / "plain.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    argv = [*store_args(root, "hospital"), "--in", tmp_path / "in" / "plain.png"]
    ciphertext = tmp_path / "in" / "cipher.png"
    assert run(capsys, "encrypt", *argv, "--out", ciphertext).code == 0
    out = tmp_path / "out"
    out.mkdir()

    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    for command, source in (("encrypt", argv), ("decrypt", [*argv[:4], "--in", ciphertext])):
        outcome = run(capsys, command, *source, "--out", out / "cipher.png")
        assert_refused(outcome, "wrong passphrase", str(root))
        assert passphrase not in outcome.err and "not the passphrase" not in outcome.err
    monkeypatch.delenv(PASSPHRASE_ENV)
    assert_refused(run(capsys, "encrypt", *argv, "--out", out / "cipher.png"), PASSPHRASE_ENV)
    assert list(out.iterdir()) == []

    monkeypatch.setenv(PASSPHRASE_ENV, passphrase)
    assert run(capsys, "encrypt", *argv, "--out", out / "cipher.png").code == 0
    assert_no_key_material(key, [root, out])


def _garbage_key_file(root: Path) -> str:
    (root / "hospital" / "v1.json").write_bytes(b"\x00garbage{")
    return "v1.json is corrupt"


def _tampered_key_file(root: Path) -> str:
    path = root / "hospital" / "v1.json"
    record = json.loads(path.read_text())
    record["metadata"]["cipher"]["block_size"] = 8  # a different cipher under the same seal
    path.write_text(json.dumps(record))
    return "tampered"


def _garbage_header(root: Path) -> str:
    (root / "store.json").write_text("not json")
    return "store.json is corrupt"


def _lost_master_key(root: Path) -> str:
    (root / "master.key").unlink()
    return "lost its master.key"


@pytest.mark.parametrize(
    "damage", [_garbage_key_file, _tampered_key_file, _garbage_header, _lost_master_key]
)
def test_a_damaged_key_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[Path], str]
) -> None:
    root = tmp_path / "store"
    assert run(capsys, *keygen_args(root, "hospital")).code == 0
    write_png(tmp_path / "plain.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    tenant = store_args(root, "hospital")
    encrypted = tmp_path / "cipher.png"
    assert (
        run(capsys, "encrypt", *tenant, "--in", tmp_path / "plain.png", "--out", encrypted).code
        == 0
    )
    expected = damage(root)
    out = tmp_path / "out"
    out.mkdir()
    for command, source in (("encrypt", tmp_path / "plain.png"), ("decrypt", encrypted)):
        outcome = run(capsys, command, *tenant, "--in", source, "--out", out / "out.png")
        assert_refused(outcome, expected)
    assert list(out.iterdir()) == []


# --- show, ciphers, data split, help --------------------------------------------------------
@pytest.mark.parametrize("tenant_id", sorted(TENANTS))
def test_show_writes_plain_and_encrypted_side_by_side(
    store: SharedStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    images: np.ndarray,
    tenant_id: str,
) -> None:
    np.save(tmp_path / "plain.npy", images)
    picture = tmp_path / "grid.png"
    counter = store.root / tenant_id / "nonces.json"
    reserved = json.loads(counter.read_text())["next"] if counter.exists() else 0
    outcome = run(
        capsys,
        *("show", *store_args(store.root, tenant_id), "--limit", 2),
        *("--in", tmp_path / "plain.npy", "--out", picture),
    )
    assert outcome.code == 0 and str(picture) in outcome.out
    with Image.open(picture) as opened:
        assert opened.format == "PNG"
        grid = np.asarray(opened.convert("RGB"))
    # 160-pixel cells (16 × 10) with 4-pixel gaps: 2 columns, 2 rows (--limit), 18-pixel titles.
    assert grid.shape == (18 + 2 * 164 + 4, 2 * 164 + 4, 3)
    cipher = create_cipher(store.keys[tenant_id])
    nonces = None
    if cipher.per_image:  # the next two nonces of the tenant's counter
        first = max(reserved, RESERVED_NONCE_BASE)
        nonces = np.arange(first, first + 2)
    encrypted = cipher.encrypt(images[:2], nonces)
    for row in range(2):
        top = 18 + 4 + row * 164
        assert np.array_equal(grid[top : top + 160, 4:164], upscale(images[row], 10))
        assert np.array_equal(grid[top : top + 160, 168:328], upscale(encrypted[row], 10))
    assert_no_key_material(list(store.keys.values()), [picture, outcome.out])


def test_show_refuses_bad_input_without_writing(
    store: SharedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "small.npy", np.zeros((1, 8, 8, 3), np.uint8))
    argv = ["show", *store_args(store.root, "hospital"), "--out", tmp_path / "grid.png"]
    assert_refused(run(capsys, *argv, "--in", tmp_path / "small.npy"), "image size 16")
    with pytest.raises(SystemExit) as stop:
        run(capsys, *argv, "--in", tmp_path / "small.npy", "--limit", 0)
    assert stop.value.code == 2 and "--limit" in capsys.readouterr().err
    assert_refused(run(capsys, *argv, "--in", tmp_path / "none.npy"), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.npy"]


def test_ciphers_lists_every_cipher_with_its_key_space(capsys: pytest.CaptureFixture[str]) -> None:
    for block_size, image_size in ((4, 32), (8, 64)):
        outcome = run(capsys, "ciphers", "--block-size", block_size, "--image-size", image_size)
        assert outcome.code == 0
        lines = outcome.out.splitlines()
        for name in available_ciphers():
            bits = key_space_bits(CipherSpec(name, block_size, image_size))
            (line,) = [line for line in lines if line.split()[0] == name]
            assert line.split()[1] == f"{bits:.1f}"
        assert "not a security claim" in outcome.out
    assert_refused(run(capsys, "ciphers", "--block-size", 5), "block size 5", "image size 32")


@pytest.fixture
def labelled_source(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(11)
    images = rng.integers(0, 256, size=(24, 8, 8, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(24)  # every image distinct, so the shares can be matched
    labels = np.repeat(np.arange(4), 6)
    path = tmp_path / "source.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b", "c", "d"]))
    return path, images


@pytest.mark.parametrize("dirichlet", [None, 0.5])
def test_data_split_deals_every_image_to_one_tenant(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    labelled_source: tuple[Path, np.ndarray],
    dirichlet: float | None,
) -> None:
    source, _ = labelled_source
    out = tmp_path / "tenants"
    extra = [] if dirichlet is None else ["--dirichlet", dirichlet]
    outcome = run(
        capsys,
        *("data", "split", "--source", source, "--tenants", 3, "--prefix", "clinic-"),
        *("--seed", 1, "--out", out, *extra),
    )
    assert outcome.code == 0, outcome
    tenant_ids = ["clinic-1", "clinic-2", "clinic-3"]
    assert sorted(p.name for p in out.iterdir()) == [*tenant_ids, "split.json"]
    shares = []
    for tenant_id in tenant_ids:
        assert f"{tenant_id}: " in outcome.out
        with np.load(out / tenant_id / "images.npz") as part:
            shares.append(part["images"])
            assert list(part["class_names"]) == ["a", "b", "c", "d"]
    dealt = np.concatenate(shares)
    assert sorted(dealt[:, 0, 0, 0].tolist()) == list(range(24))
    summary = json.loads((out / "split.json").read_text())
    assert summary["split"] == ("iid" if dirichlet is None else "dirichlet")
    assert summary["total_images"] == 24
    if dirichlet is None:
        assert sorted(len(share) for share in shares) == [8, 8, 8]


def test_data_split_refuses_a_non_empty_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labelled_source: tuple[Path, np.ndarray]
) -> None:
    source, _ = labelled_source
    out = tmp_path / "tenants"
    out.mkdir()
    (out / "earlier.txt").write_text("keep me")
    argv = ["data", "split", "--source", source, "--tenants", 2, "--out", out]
    assert_refused(run(capsys, *argv), str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]
    missing = ["data", "split", "--source", tmp_path / "none.npz", "--tenants", 2]
    assert_refused(run(capsys, *missing, "--out", tmp_path / "fresh"), "none.npz")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["keygen", "keys", "encrypt", "decrypt", "show", "ciphers", "data", "experiment"]),
        (["encrypt"], ["--store", "--tenant", "--in", "--out", "--key-version", "nonce"]),
        (["experiment", "paper-table"], ["--epochs", "--block-size", "--tenants"]),
    ],
)
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at any width
    for word in expected:
        assert word in out


def test_a_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("patchveil: error: ") and "--help" in err and err.count("\n") == 1


# --- logs -----------------------------------------------------------------------------------
def test_logs_hold_no_key_material(
    store: SharedStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    images: np.ndarray,
) -> None:
    caplog.set_level(logging.DEBUG)
    np.save(tmp_path / "plain.npy", images)
    for tenant_id in TENANTS:
        tenant = store_args(store.root, tenant_id)
        cipher_path, back_path = tmp_path / f"{tenant_id}.npz", tmp_path / f"{tenant_id}-back.npy"
        for argv in (
            ["encrypt", *tenant, "--in", tmp_path / "plain.npy", "--out", cipher_path],
            ["decrypt", *tenant, "--in", cipher_path, "--out", back_path],
            ["show", *tenant, "--in", tmp_path / "plain.npy", "--out", tmp_path / "grid.png"],
            ["keys", "list", *tenant],
            ["encrypt", *tenant, "--in", tmp_path / "nowhere.npy", "--out", tmp_path / "x.npz"],
        ):
            run(capsys, *argv)
        assert np.array_equal(np.load(back_path), images)
    records = [
        f"{record.name} {record.levelname} {record.getMessage()} {record.args!r} {record.exc_text}"
        for record in caplog.records
    ]
    assert_no_key_material(list(store.keys.values()), [caplog.text, *records])


# --- real processes -------------------------------------------------------------------------
def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), environment.get("PYTHONPATH")])
    )
    return environment


def patchveil(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patchveil", *map(str, argv)],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_the_command_in_a_real_process(tmp_path: Path, images: np.ndarray) -> None:
    root, tenant = tmp_path / "store", ["--store", tmp_path / "store", "--tenant", "hospital"]
    created = patchveil(*keygen_args(root, "hospital", "disposable"))
    assert created.returncode == 0, created.stderr
    write_png(tmp_path / "plain.png", images[0])
    encrypted = patchveil(
        "encrypt", *tenant, "--in", tmp_path / "plain.png", "--out", tmp_path / "c.png"
    )
    assert encrypted.returncode == 0, encrypted.stderr
    decrypted = patchveil(
        "decrypt", *tenant, "--in", tmp_path / "c.png", "--out", tmp_path / "p.png"
    )
    assert decrypted.returncode == 0, decrypted.stderr
    assert np.array_equal(read_pixels(tmp_path / "p.png")[0], images[0])
    refused = patchveil(
        "encrypt", *tenant, "--in", tmp_path / "none.png", "--out", tmp_path / "x.png"
    )
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "none.png does not exist" in refused.stderr
    key = KeyStore(root).load("hospital")
    streams = [p.stdout + p.stderr for p in (created, encrypted, decrypted, refused)]
    assert_no_key_material(key, [*streams, tmp_path / "c.png"])


_IMPORT_PROBE = """
import json, runpy, sys
report = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["patchveil", *argv]
    try:
        runpy.run_module("patchveil", run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    loaded = sorted(name for name in ("torch", "ray") if name in sys.modules)
    report.append({"argv": argv[:2], "code": code, "loaded": loaded})
print("REPORT " + json.dumps(report))
"""


def test_tenant_commands_import_neither_torch_nor_ray(tmp_path: Path) -> None:
    """One interpreter runs the commands in turn; sys.modules after each says what they loaded."""
    np.save(tmp_path / "plain.npy", np.zeros((1, SIZE, SIZE, 3), np.uint8))
    tenant = ["--store", str(tmp_path / "store"), "--tenant", "hospital"]
    commands = [
        ["--help"],
        ["ciphers"],
        [str(arg) for arg in keygen_args(tmp_path / "store", "hospital")],
        ["encrypt", *tenant, "--in", str(tmp_path / "plain.npy"), "--out", str(tmp_path / "c.npz")],
    ]
    probe = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.rsplit("REPORT ", 1)[1])
    assert [entry["code"] for entry in report] == [0, 0, 0, 0], probe.stderr
    assert [entry["loaded"] for entry in report] == [[], [], [], []], report
    assert (tmp_path / "c.npz").exists()


# --- the tenant never loses a key, never gets garbage back (issue 17) -------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_store_without_its_header_is_refused_and_keeps_every_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    root = tmp_path / "store"
    assert run(capsys, *keygen_args(root, "hospital", "disposable")).code == 0
    np.save(tmp_path / "plain.npy", images)
    tenant = store_args(root, "hospital")
    assert (
        run(
            capsys, "encrypt", *tenant, "--in", tmp_path / "plain.npy", "--out", tmp_path / "c.npz"
        ).code
        == 0
    )
    (root / "store.json").rename(tmp_path / "store.json.aside")
    before = _files(root)
    for argv in (
        ["encrypt", *tenant, "--in", tmp_path / "plain.npy", "--out", tmp_path / "d.npz"],
        ["decrypt", *tenant, "--in", tmp_path / "c.npz", "--out", tmp_path / "p.npy"],
        ["keys", "rotate", *tenant],
        ["keys", "retire", *tenant, "--version", 1, "--force"],
        [*keygen_args(root, "newcomer")],
    ):
        assert_refused(
            run(capsys, *argv), "incomplete", "store.json is missing", "Nothing was written"
        )
        assert _files(root) == before
    (tmp_path / "store.json.aside").rename(root / "store.json")
    back = run(capsys, "decrypt", *tenant, "--in", tmp_path / "c.npz", "--out", tmp_path / "p.npy")
    assert back.code == 0 and np.array_equal(np.load(tmp_path / "p.npy"), images)


def test_retire_checks_the_passphrase_and_keeps_the_only_active_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    tenant = store_args(root, "hospital")
    monkeypatch.setenv(PASSPHRASE_ENV, "right")
    assert run(capsys, *keygen_args(root, "hospital")).code == 0
    before = _files(root)
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    assert_refused(
        run(capsys, "keys", "retire", *tenant, "--version", 1, "--force"), "wrong passphrase"
    )
    monkeypatch.delenv(PASSPHRASE_ENV)
    assert_refused(
        run(capsys, "keys", "retire", *tenant, "--version", 1, "--force"), PASSPHRASE_ENV
    )
    assert _files(root) == before
    monkeypatch.setenv(PASSPHRASE_ENV, "right")
    only = run(capsys, "keys", "retire", *tenant, "--version", 1)
    assert_refused(only, "only active key", "keys rotate", "--force")
    assert _files(root) == before
    forced = run(capsys, "keys", "retire", *tenant, "--version", 1, "--force")
    assert forced.code == 0 and "retired" in forced.out
    # The way out: keygen points to rotate, and rotate makes version 2 with the same cipher.
    assert_refused(
        run(capsys, *keygen_args(root, "hospital")), "only retired versions", "keys rotate"
    )
    rotated = run(capsys, "keys", "rotate", *tenant)
    assert rotated.code == 0 and "version 2 is now active" in rotated.out


@pytest.mark.parametrize("group", ["xyz", "", "rf_np"])
def test_keygen_refuses_a_group_that_can_never_encrypt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], group: str
) -> None:
    root = tmp_path / "store"
    outcome = run(capsys, *keygen_args(root, "hospital", "disposable"), "--param", f"group={group}")
    assert_refused(outcome, "unknown block group", "np_cs")
    assert not root.exists()


def test_keys_rotate_can_change_a_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    tenant = store_args(root, "hospital")
    assert run(capsys, *keygen_args(root, "hospital", "disposable")).code == 0
    assert_refused(
        run(capsys, "keys", "rotate", *tenant, "--param", "group=xyz"), "unknown block group"
    )
    assert KeyStore(root).versions("hospital") == [1]
    assert run(capsys, "keys", "rotate", *tenant, "--param", "group=rf").code == 0
    assert KeyStore(root).load("hospital").spec.param_dict["group"] == "rf"


def test_encrypt_never_takes_a_caller_chosen_nonce(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    root = tmp_path / "store"
    tenant = store_args(root, "hospital")
    assert run(capsys, *keygen_args(root, "hospital", "disposable")).code == 0
    np.save(tmp_path / "plain.npy", images)
    with pytest.raises(SystemExit) as stop:
        run(
            capsys,
            "encrypt",
            *tenant,
            "--in",
            tmp_path / "plain.npy",
            "--out",
            tmp_path / "c.npz",
            "--first-nonce",
            0,
        )
    assert stop.value.code == 2 and "--first-nonce" in capsys.readouterr().err
    for name in ("one.npz", "two.npz"):
        assert (
            run(
                capsys, "encrypt", *tenant, "--in", tmp_path / "plain.npy", "--out", tmp_path / name
            ).code
            == 0
        )
    one, two = stored_nonces(tmp_path / "one.npz"), stored_nonces(tmp_path / "two.npz")
    assert one is not None and two is not None
    assert not set(one.tolist()) & set(two.tolist())
    assert not np.array_equal(read_pixels(tmp_path / "one.npz"), read_pixels(tmp_path / "two.npz"))


def _save_png(path: Path, pixels: np.ndarray, metadata: dict[str, object]) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("patchveil", json.dumps(metadata))
    Image.fromarray(pixels).save(path, format="PNG", pnginfo=info)


def _edit_png_metadata(path: Path, **changes: object) -> None:
    with Image.open(path) as opened:
        metadata = json.loads(opened.text["patchveil"])
        pixels = np.asarray(opened.convert("RGB"))
    _save_png(path, pixels, {**metadata, **changes})


@pytest.mark.parametrize("tenant_id", sorted(TENANTS))
def test_decrypt_refuses_what_it_cannot_decrypt_exactly(
    store: SharedStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    images: np.ndarray,
    tenant_id: str,
) -> None:
    tenant = store_args(store.root, tenant_id)
    plain_path, cipher_path, _ = write_input("folder", tmp_path / "in", images)
    assert run(capsys, "encrypt", *tenant, "--in", plain_path, "--out", cipher_path).code == 0
    np.save(tmp_path / "plain.npy", images)
    assert (
        run(
            capsys, "encrypt", *tenant, "--in", tmp_path / "plain.npy", "--out", tmp_path / "c.npz"
        ).code
        == 0
    )

    def refused(source: Path, *fragments: str) -> None:
        out = tmp_path / "out"
        outcome = run(capsys, "decrypt", *tenant, "--in", source, "--out", out)
        assert_refused(outcome, *fragments)
        assert not out.exists()

    # A pixel changed, a nonce or version edited, metadata stripped, a bare .npy, another tenant.
    edited = tmp_path / "edited.png"
    pixels = read_pixels(cipher_path / "a.png")[0].copy()
    pixels[0, 0, 0] ^= 1
    with Image.open(cipher_path / "a.png") as opened:
        _save_png(edited, pixels, json.loads(opened.text["patchveil"]))
    refused(edited, "fail their integrity check")
    nonce_edited = tmp_path / "nonce.png"
    nonce_edited.write_bytes((cipher_path / "b.png").read_bytes())
    _edit_png_metadata(nonce_edited, nonce=5)
    refused(nonce_edited, "fail their integrity check")
    stripped = write_png(tmp_path / "stripped.png", read_pixels(cipher_path / "a.png")[0])
    refused(stripped, "carries no patchveil metadata")
    np.save(tmp_path / "bare.npy", read_pixels(tmp_path / "c.npz"))
    refused(tmp_path / "bare.npy", "bare .npy", "carries no key version")
    other = tmp_path / "other.png"
    other.write_bytes((cipher_path / "a.png").read_bytes())
    _edit_png_metadata(other, tenant_id="someone-else")
    refused(other, "encrypted by tenant 'someone-else'")
    version = tmp_path / "version.png"
    version.write_bytes((cipher_path / "a.png").read_bytes())
    _edit_png_metadata(version, key_version=9)
    refused(version, "no key version 9")

    # One file gone from a folder spoils nothing else: each file carries its own nonce.
    (cipher_path / "b.png").unlink()
    back = tmp_path / "back"
    assert run(capsys, "decrypt", *tenant, "--in", cipher_path, "--out", back).code == 0
    assert np.array_equal(read_pixels(back), images[[0, 2]])


def test_decrypt_refuses_ciphertext_of_another_key_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], images: np.ndarray
) -> None:
    """Same tenant name, same version number, another secret: refused, not garbage."""
    np.save(tmp_path / "plain.npy", images)
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        assert run(capsys, *keygen_args(root, "hospital")).code == 0
    encrypted = run(
        capsys,
        "encrypt",
        *store_args(first, "hospital"),
        "--in",
        tmp_path / "plain.npy",
        "--out",
        tmp_path / "c.npz",
    )
    assert encrypted.code == 0
    outcome = run(
        capsys,
        "decrypt",
        *store_args(second, "hospital"),
        "--in",
        tmp_path / "c.npz",
        "--out",
        tmp_path / "p.npy",
    )
    assert_refused(outcome, "another key store")
    assert not (tmp_path / "p.npy").exists()


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_an_output_equal_to_the_input_is_refused(
    store: SharedStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    images: np.ndarray,
    command: str,
) -> None:
    tenant = store_args(store.root, "hospital")
    path = tmp_path / ("x.npy" if command == "encrypt" else "x.npz")
    if command == "encrypt":
        np.save(path, images)
    else:
        np.save(tmp_path / "plain.npy", images)
        assert (
            run(capsys, "encrypt", *tenant, "--in", tmp_path / "plain.npy", "--out", path).code == 0
        )
    before = path.read_bytes()
    assert_refused(run(capsys, command, *tenant, "--in", path, "--out", path), "is the input")
    assert path.read_bytes() == before
    plain_folder, _, _ = write_input("folder", tmp_path / "f", images)
    assert_refused(
        run(capsys, command, *tenant, "--in", plain_folder, "--out", plain_folder / "inside"),
        "inside one another",
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--block-size", 4, "--image-size", 100_000], "--image-size"),
        (["--block-size", 0, "--image-size", 32], "--block-size"),
        (["--block-size", "four", "--image-size", 32], "--block-size"),
    ],
)
def test_keygen_bounds_numbers_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[object], fragment: str
) -> None:
    root = tmp_path / "store"
    with pytest.raises(SystemExit) as stop:
        main(
            [
                str(a)
                for a in [
                    "keygen",
                    *store_args(root, "hospital"),
                    "--cipher",
                    "conventional",
                    *argv,
                ]
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not root.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["tenant", "onboard", "--tenant", "a", "--block-size", "100000"],
        ["tenant", "onboard", "--tenant", "a", "--validation-fraction", "nan"],
        ["tenant", "onboard", "--tenant", "a", "--shard-size", "0"],
        ["train", "--dataset", "d", "--epochs", "-1"],
        ["train", "--dataset", "d", "--learning-rate", "inf"],
        ["train", "--dataset", "d", "--seed", str(2**70)],
        ["experiment", "paper-table", "--block-size", "100000"],
        [
            "encrypt",
            "--store",
            "s",
            "--tenant",
            "a",
            "--in",
            "x",
            "--out",
            "y",
            "--first-nonce",
            str(2**70),
        ],
        ["show", "--store", "s", "--tenant", "a", "--in", "x", "--out", "y", "--limit", str(10**9)],
    ],
)
def test_numbers_are_bounded_before_anything_starts(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err and err.count("\n") == 1
