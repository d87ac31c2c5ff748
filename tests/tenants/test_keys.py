"""Tests for `Key` (no secret ever shown or pickled) and `CipherSpec` (validation, JSON)."""

from __future__ import annotations

import copy
import json
import pickle

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchveil.errors import CipherConfigError, PatchveilError
from patchveil.tenants.keys import SECRET_BYTES, CipherSpec, Key, _secret_of
from tests.helpers import assert_no_key_material

SPEC = CipherSpec("conventional", 4, 32)


def test_generate_makes_a_fresh_256_bit_secret() -> None:
    first, second = Key.generate("hospital", SPEC), Key.generate("hospital", SPEC)
    assert SECRET_BYTES == 32
    assert len(_secret_of(first)) == 32
    assert _secret_of(first) != _secret_of(second)
    assert first.key_id != second.key_id
    assert first != second
    assert first.version == 1
    assert Key.generate("hospital", SPEC, version=3).version == 3


def test_repr_and_str_show_no_secret() -> None:
    key = Key.generate("hospital", SPEC)
    shown = [repr(key), str(key), f"{key}", f"{key!r}", format(key), repr([key]), str({key})]
    for text in shown:
        assert text.startswith("Key(") or key.key_id in text
        assert_no_key_material(key, text)
    assert repr(key) == (f"Key(id={key.key_id}, version=1, tenant=hospital, cipher=conventional)")


def test_metadata_holds_everything_but_the_secret() -> None:
    key = Key.generate("hospital", SPEC)
    metadata = key.metadata()
    assert metadata == {
        "tenant_id": "hospital",
        "key_id": key.key_id,
        "version": 1,
        "cipher": SPEC.to_json(),
        "created_at": key.created_at,
    }
    assert json.loads(key.metadata_json()) == metadata
    assert_no_key_material(key, [key.metadata_json(), json.dumps(metadata)])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_keys_refuse_pickling(protocol: int) -> None:
    key = Key.generate("hospital", SPEC)
    with pytest.raises(TypeError, match="cannot be pickled") as caught:
        pickle.dumps(key, protocol=protocol)
    assert_no_key_material(key, str(caught.value))


def test_keys_refuse_cloudpickle_and_copying() -> None:
    """Ray ships objects with cloudpickle; a key must not be able to ride along."""
    key = Key.generate("hospital", SPEC)
    with pytest.raises(TypeError, match="cannot be pickled"):
        cloudpickle.dumps(key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        cloudpickle.dumps({"nested": [key]})
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_keystream_labels_separate_purposes() -> None:
    key = Key.generate("hospital", SPEC)
    assert key.keystream("a").read(32) == key.keystream("a").read(32)
    assert key.keystream("a").read(32) != key.keystream("b").read(32)
    assert_no_key_material(key, repr(key.keystream("a")))


def test_equality_and_hash() -> None:
    key = Key.generate("hospital", SPEC)
    twin = Key(
        tenant_id=key.tenant_id,
        key_id=key.key_id,
        version=key.version,
        spec=key.spec,
        created_at=key.created_at,
        _secret=_secret_of(key),
    )
    impostor = Key(
        tenant_id=key.tenant_id,
        key_id=key.key_id,
        version=key.version,
        spec=key.spec,
        created_at=key.created_at,
        _secret=bytes(32),
    )
    assert key == twin and hash(key) == hash(twin)
    assert key != impostor
    assert key != "not a key"


# --- CipherSpec ---------------------------------------------------------------------------
@pytest.mark.parametrize(("block_size", "image_size"), [(5, 32), (3, 32), (64, 32), (7, 48)])
def test_block_size_must_divide_image_size(block_size: int, image_size: int) -> None:
    with pytest.raises(CipherConfigError) as caught:
        CipherSpec("conventional", block_size, image_size)
    message = str(caught.value)
    assert f"block size {block_size}" in message
    assert f"image size {image_size}" in message
    assert "divide" in message
    assert isinstance(caught.value, PatchveilError)


def test_divisor_hint_lists_valid_block_sizes() -> None:
    with pytest.raises(CipherConfigError, match=r"e\.g\. 2, 4, 8, 16, 32"):
        CipherSpec("conventional", 5, 32)


@pytest.mark.parametrize(("block_size", "image_size"), [(0, 32), (-4, 32), (4, 0), (4, -8)])
def test_sizes_must_be_positive(block_size: int, image_size: int) -> None:
    with pytest.raises(CipherConfigError, match="must be positive") as caught:
        CipherSpec("conventional", block_size, image_size)
    assert str(block_size) in str(caught.value) and str(image_size) in str(caught.value)


def test_geometry() -> None:
    assert CipherSpec("conventional", 4, 32).blocks_per_side == 8
    assert CipherSpec("conventional", 32, 32).blocks_per_side == 1


def test_params_are_sorted_and_hashable() -> None:
    spec = CipherSpec("restricted", 4, 32, (("pixel_fraction", 0.5), ("block_fraction", 0.2)))
    assert spec.params == (("block_fraction", 0.2), ("pixel_fraction", 0.5))
    same = CipherSpec("restricted", 4, 32, (("block_fraction", 0.2), ("pixel_fraction", 0.5)))
    assert spec == same and hash(spec) == hash(same)
    assert spec.param_dict == {"block_fraction": 0.2, "pixel_fraction": 0.5}


param_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
    st.booleans(),
    st.text(max_size=10),
)


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(min_size=1, max_size=12),
    block_size=st.integers(1, 16),
    blocks_per_side=st.integers(1, 8),
    params=st.dictionaries(st.text(min_size=1, max_size=12), param_values, max_size=4),
)
def test_spec_json_round_trip(
    name: str, block_size: int, blocks_per_side: int, params: dict[str, object]
) -> None:
    spec = CipherSpec(name, block_size, block_size * blocks_per_side, tuple(params.items()))
    text = json.dumps(spec.to_json())
    again = CipherSpec.from_json(json.loads(text))
    assert again == spec
    assert again.to_json() == spec.to_json()
    assert {k: type(v) for k, v in again.param_dict.items()} == {
        k: type(v) for k, v in spec.param_dict.items()
    }


def test_from_json_without_params() -> None:
    spec = CipherSpec.from_json({"name": "plain", "block_size": "4", "image_size": 32})
    assert spec == CipherSpec("plain", 4, 32)
    assert isinstance(spec.block_size, int)


def test_from_json_checks_geometry() -> None:
    with pytest.raises(CipherConfigError, match="block size 5 does not divide image size 32"):
        CipherSpec.from_json({"name": "plain", "block_size": 5, "image_size": 32})
