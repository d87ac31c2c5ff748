"""The Open Inference Protocol (KServe v2) on the wire: parse an infer request, build responses.

Pure functions of bytes and dicts, so every malformed request a fuzzer can make is answered here
with a `RequestError` carrying its HTTP status and a message, never an exception from deep inside
numpy or the model. Two encodings of the input tensor are accepted: JSON (`data` as a flat or
nested list) and the binary-tensor extension (`Inference-Header-Content-Length` gives the JSON
header's length; the raw bytes follow it, `parameters.binary_data_size` per input).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchveil.errors import PatchveilError
from patchveil.serve.result_privacy import parse_result_key
from patchveil.serve.settings import INPUT_NAME

BINARY_HEADER = "inference-header-content-length"
_MAX_REQUEST_ID = 256


class RequestError(PatchveilError):
    """A request the endpoint refuses, with the HTTP status to answer and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request: uint8 images [N, H, W, 3] and the request's options."""

    images: np.ndarray
    request_id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


_KIND_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _field(mapping: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in mapping:
        raise RequestError(400, f"{where} has no {name!r}")
    value = mapping[name]
    if not isinstance(value, kind):
        raise RequestError(400, f"{where}.{name} must be {_KIND_NAMES[kind]}")
    return value


def _decode_header(raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RequestError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise RequestError(400, "the request body must be a JSON object with 'inputs'")
    return document


def _check_shape(shape: Any, image_size: int, max_images: int) -> tuple[int, int, int, int]:
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in shape
    ):
        raise RequestError(400, "inputs[0].shape must be a list of integers [N, H, W, 3]")
    if len(shape) != 4 or shape[3] != 3:
        raise RequestError(422, f"inputs[0].shape must be [N, H, W, 3], got {shape}")
    count, height, width, _ = shape
    if count < 1:
        raise RequestError(422, f"inputs[0].shape asks for {count} images; send at least one")
    if count > max_images:
        raise RequestError(
            413, f"{count} images in one request; send at most {max_images} per request"
        )
    if (height, width) != (image_size, image_size):
        raise RequestError(
            422,
            f"images are {height}×{width}, but this model takes {image_size}×{image_size} "
            "ciphertexts (encrypt with a key made for this image size)",
        )
    return count, height, width, 3


def _json_pixels(data: Any, shape: tuple[int, int, int, int]) -> np.ndarray:
    expected = math.prod(shape)
    if not isinstance(data, list):
        raise RequestError(400, "inputs[0].data must be a list of integers 0–255")
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, RecursionError):
        raise RequestError(
            422, "inputs[0].data is ragged: every row must have the same length"
        ) from None
    if values.dtype.kind not in "iu":  # not floats, strings, booleans or mixed objects
        raise RequestError(422, "inputs[0].data must hold integers 0–255 only")
    if values.ndim != 1 and values.shape != shape:
        raise RequestError(
            422,
            f"inputs[0].data is nested as {list(values.shape)}; send it flat or nested as the "
            f"shape {list(shape)}",
        )
    if values.size != expected:
        raise RequestError(
            422,
            f"inputs[0].data holds {values.size} values, but shape {list(shape)} needs {expected}",
        )
    if values.size and (values.min() < 0 or values.max() > 255):
        raise RequestError(422, "inputs[0].data must hold integers 0–255 (UINT8)")
    return values.astype(np.uint8).reshape(shape)


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    *,
    image_size: int,
    max_images: int,
) -> InferRequest:
    """Parse and check an infer request for a model taking `image_size`² RGB ciphertexts."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise RequestError(400, "Inference-Header-Content-Length must be an integer") from None
        if not 0 < length <= len(body):
            raise RequestError(
                400,
                f"Inference-Header-Content-Length is {length}, but the body has {len(body)} bytes",
            )
        document, binary = _decode_header(body[:length]), memoryview(body)[length:]
    else:
        document, binary = _decode_header(body), None
    inputs = _field(document, "inputs", list, "the request")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"send exactly one input tensor named {INPUT_NAME!r}")
    tensor = inputs[0]
    name = _field(tensor, "name", str, "inputs[0]")
    if name != INPUT_NAME:
        raise RequestError(422, f"the input tensor is named {name[:64]!r}; name it {INPUT_NAME!r}")
    datatype = _field(tensor, "datatype", str, "inputs[0]")
    if datatype != "UINT8":
        raise RequestError(
            422, f"inputs[0].datatype is {datatype[:32]!r}; ciphertexts are UINT8 images"
        )
    shape = _check_shape(_field(tensor, "shape", list, "inputs[0]"), image_size, max_images)
    tensor_parameters = tensor.get("parameters") or {}
    if not isinstance(tensor_parameters, dict):
        raise RequestError(400, "inputs[0].parameters must be an object")
    if binary is not None:
        size = tensor_parameters.get("binary_data_size")
        if "data" in tensor or not isinstance(size, int) or isinstance(size, bool):
            raise RequestError(
                400,
                "with Inference-Header-Content-Length, inputs[0] carries "
                "parameters.binary_data_size and no 'data'",
            )
        expected = math.prod(shape)
        if size != expected or len(binary) != expected:
            raise RequestError(
                422,
                f"binary data holds {len(binary)} bytes (binary_data_size {size}), but shape "
                f"{list(shape)} needs {expected}",
            )
        images = np.frombuffer(binary, dtype=np.uint8).reshape(shape).copy()
    else:
        if "binary_data_size" in tensor_parameters:
            raise RequestError(
                400,
                "inputs[0].parameters.binary_data_size needs the Inference-Header-Content-Length "
                "header (binary-tensor extension); a JSON request carries 'data'",
            )
        if "data" not in tensor:
            raise RequestError(400, "inputs[0] has no 'data' (or use the binary-tensor extension)")
        images = _json_pixels(tensor["data"], shape)
    request_id = document.get("id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > _MAX_REQUEST_ID
    ):
        raise RequestError(400, f"'id' must be a string of at most {_MAX_REQUEST_ID} characters")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "'parameters' must be an object")
    return InferRequest(images=images, request_id=request_id, parameters=parameters)


@dataclass(frozen=True)
class CandidateOption:
    """Result privacy asked for: `k` labels per image, in an order keyed by `result_key`."""

    k: int
    result_key: bytes | None

    def __repr__(self) -> str:
        return f"CandidateOption(k={self.k}, keyed={self.result_key is not None})"


def candidate_option(parameters: Mapping[str, Any], num_classes: int) -> CandidateOption | None:
    """The `candidates` option (result privacy): k labels per image, 2 ≤ k ≤ classes, and an
    optional `result_key` (64 hex digits, fresh per request); None when not asked for."""
    value = parameters.get("candidates")
    if value is None:
        if "result_key" in parameters:
            raise RequestError(422, "parameters.result_key needs parameters.candidates")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= num_classes:
        raise RequestError(422, f"parameters.candidates must be an integer from 2 to {num_classes}")
    key_text = parameters.get("result_key")
    if key_text is None:
        return CandidateOption(value, None)
    if not isinstance(key_text, str):
        raise RequestError(422, "parameters.result_key must be a string of 64 hex digits")
    try:
        return CandidateOption(value, parse_result_key(key_text))
    except PatchveilError as error:
        raise RequestError(422, str(error)) from None


def infer_response(
    model_name: str,
    model_version: int,
    request_id: str | None,
    labels: Sequence[int],
    confidences: Sequence[float],
    candidates: np.ndarray | None = None,
) -> dict[str, Any]:
    """The OIP response: `label` (INT64 [N]) and `confidence` (FP32 [N]), and with result
    privacy `candidates` (INT64 [N, k]) in place of the label."""
    count = len(labels)
    outputs: list[dict[str, Any]] = []
    if candidates is None:
        outputs.append(
            {
                "name": "label",
                "datatype": "INT64",
                "shape": [count],
                "data": [int(v) for v in labels],
            }
        )
    else:
        outputs.append(
            {
                "name": "candidates",
                "datatype": "INT64",
                "shape": list(candidates.shape),
                "data": [int(v) for v in candidates.reshape(-1)],
            }
        )
    outputs.append(
        {
            "name": "confidence",
            "datatype": "FP32",
            "shape": [count],
            "data": [round(float(v), 6) for v in confidences],
        }
    )
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(model_version),
        "outputs": outputs,
    }
    if request_id is not None:
        response["id"] = request_id
    return response


def model_metadata(
    model_name: str, versions: Sequence[int], image_size: int, num_classes: int
) -> dict[str, Any]:
    """`GET /v2/models/{name}`: what the model takes and answers."""
    return {
        "name": model_name,
        "versions": [str(v) for v in versions],
        "platform": "pytorch_vit_on_ciphertext",
        "inputs": [
            {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, image_size, image_size, 3]}
        ],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        ],
        "parameters": {"num_classes": num_classes},
    }
