"""The Open Inference Protocol parser: every malformed request is a RequestError with a 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patchveil.serve.oip import (
    RequestError,
    candidate_option,
    infer_response,
    model_metadata,
    parse_infer_request,
)


def _json_request(images: np.ndarray, **overrides: object) -> bytes:
    tensor = {"name": "images", "datatype": "UINT8", "shape": list(images.shape)}
    tensor["data"] = images.reshape(-1).tolist()
    tensor.update(overrides)
    return json.dumps({"id": "r1", "inputs": [tensor]}).encode()


def _binary_request(images: np.ndarray, size: int | None = None) -> tuple[bytes, str]:
    tensor = {
        "name": "images",
        "datatype": "UINT8",
        "shape": list(images.shape),
        "parameters": {"binary_data_size": images.nbytes if size is None else size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + images.tobytes(), str(len(header))


def _parse(body: bytes, header: str | None = None) -> object:
    return parse_infer_request(body, header, image_size=8, max_images=4)


def test_json_and_binary_encodings_give_the_same_images() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    from_json = parse_infer_request(_json_request(images), None, image_size=8, max_images=4)
    body, header = _binary_request(images)
    from_binary = parse_infer_request(body, header, image_size=8, max_images=4)
    assert np.array_equal(from_json.images, images)
    assert np.array_equal(from_binary.images, images)
    assert from_json.request_id == "r1"


def test_nested_json_data_is_accepted() -> None:
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [1, 8, 8, 3],
                    "data": images.tolist(),
                }
            ]
        }
    ).encode()
    assert _parse(body).images.shape == (1, 8, 8, 3)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"inputs": {}}', 400),
        (b'{"inputs": []}', 400),
        (b'{"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1,8,8,3], "data": []}]}', 422),
        (
            b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1,8,8,3], "data": []}]}',
            422,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,9,9,3], "data": []}]}',
            422,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [5,8,8,3], "data": []}]}',
            413,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [0,8,8,3], "data": []}]}',
            422,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8], "data": []}]}',
            422,
        ),
        (b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": "big", "data": []}]}', 400),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [true,8,8,3], "data": []}]}',
            400,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8,3], "data": [1,2]}]}',
            422,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8,3], "data": "x"}]}',
            400,
        ),
        (b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8,3]}]}', 400),
        (b'{"inputs": [{"name": 5, "datatype": "UINT8", "shape": [1,8,8,3], "data": []}]}', 400),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8,3], "data": [[1],[1,2]]}]}',
            422,
        ),
        (b'{"id": 7, "inputs": []}', 400),
        (b"[" * 100_000, 400),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8,3], "data": [0], "parameters": {"binary_data_size": 1}}]}',
            400,
        ),
        (
            b'{"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1,8,8,3], "data": [[0]]}]}',
            422,
        ),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_message(body: bytes, status: int) -> None:
    with pytest.raises(RequestError) as raised:
        _parse(body)
    assert raised.value.status == status
    assert raised.value.message


def test_out_of_range_and_float_values_are_refused() -> None:
    images = np.zeros((1, 8, 8, 3), dtype=np.int64)
    for value in (256, -1, 0.5, "1", None):
        data = images.reshape(-1).tolist()
        data[0] = value
        body = json.dumps(
            {
                "inputs": [
                    {"name": "images", "datatype": "UINT8", "shape": [1, 8, 8, 3], "data": data}
                ]
            }
        ).encode()
        with pytest.raises(RequestError) as raised:
            _parse(body)
        assert raised.value.status == 422


def test_binary_sizes_must_agree() -> None:
    images = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    body, header = _binary_request(images, size=10)
    with pytest.raises(RequestError, match="binary data"):
        _parse(body, header)
    body, header = _binary_request(images)
    with pytest.raises(RequestError):
        _parse(body[:-1], header)
    for bad in ("x", "0", str(len(body) + 1)):
        with pytest.raises(RequestError) as raised:
            _parse(body, bad)
        assert raised.value.status == 400


def test_candidates_option_is_bounded() -> None:
    assert candidate_option({}, 10) is None
    assert candidate_option({"candidates": 3}, 10).k == 3
    key = "ab" * 32
    option = candidate_option({"candidates": 3, "result_key": key}, 10)
    assert option.result_key == bytes.fromhex(key) and key not in repr(option)
    for bad in (1, 11, "3", True, 2.5):
        with pytest.raises(RequestError):
            candidate_option({"candidates": bad}, 10)
    for bad_key in ("ab", 5, "zz" * 32):
        with pytest.raises(RequestError) as raised:
            candidate_option({"candidates": 3, "result_key": bad_key}, 10)
        assert raised.value.status == 422
    with pytest.raises(RequestError):
        candidate_option({"result_key": key}, 10)


def test_response_and_metadata_follow_the_protocol() -> None:
    response = infer_response("m", 2, "r1", [1, 2], [0.5, 0.25])
    assert response["model_version"] == "2" and response["id"] == "r1"
    assert response["outputs"][0] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [2],
        "data": [1, 2],
    }
    sets = infer_response("m", 2, None, [1, 2], [0.5, 0.25], np.array([[1, 3], [2, 0]]))
    assert sets["outputs"][0]["name"] == "candidates" and sets["outputs"][0]["shape"] == [2, 2]
    metadata = model_metadata("m", [2], 32, 10)
    assert metadata["inputs"][0]["shape"] == [-1, 32, 32, 3]
