"""The tenant's query client: encrypt images locally, send only ciphertext to the endpoint (OIP v2),
read back labels. The key and the plain images never leave this process; the API token travels
only in the Authorization header and never in a repr or an error message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from patchveil.errors import PatchveilError
from patchveil.tenants.client import Tenant
from patchveil.tenants.result_privacy import ResultKey, resolve

INPUT_NAME = "images"
TOKEN_ENV = "PATCHVEIL_API_TOKEN"
# A homomorphic evaluation of a full request takes tens of seconds to minutes on a CPU.
HE_TIMEOUT_S = 900.0


class QueryError(PatchveilError):
    """The endpoint refused a query or could not be reached; the message says why."""


@dataclass(frozen=True)
class QueryAnswer:
    """Labels (or, with result privacy, candidate sets) and confidences for a batch of images."""

    labels: np.ndarray | None
    confidences: np.ndarray
    model_name: str
    model_version: int
    candidates: np.ndarray | None = None


def _output(outputs: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((output for output in outputs if output.get("name") == name), None)


class QueryClient:
    """An HTTP client for one endpoint and one tenant's API token."""

    def __init__(self, endpoint: str, token: str, timeout_s: float = 120.0) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise QueryError(f"endpoint {endpoint!r} must be an http:// or https:// URL")
        if not token:
            raise QueryError(f"no API token: set {TOKEN_ENV} to the token onboarding printed")
        self.endpoint = endpoint.rstrip("/")
        self._http = httpx.Client(
            base_url=self.endpoint,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def __repr__(self) -> str:
        return f"QueryClient(endpoint={self.endpoint!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise QueryError(f"cannot reach {self.endpoint}: {type(error).__name__}") from None
        try:
            document = response.json()
        except json.JSONDecodeError:
            document = {"error": response.text[:200]}
        if response.status_code >= 400:
            message = document.get("error") if isinstance(document, dict) else None
            raise QueryError(
                f"{self.endpoint} answered {response.status_code}: {message or response.text[:200]}"
            )
        return document

    def server(self) -> dict[str, Any]:
        return self._request("GET", "/v2")

    def model_name(self) -> str:
        """The model this endpoint serves (it serves one)."""
        models = self.server().get("models") or []
        if len(models) != 1:
            raise QueryError(f"{self.endpoint} serves {len(models)} models; name one with --model")
        return str(models[0])

    def metadata(self, model: str) -> dict[str, Any]:
        return self._request("GET", f"/v2/models/{model}")

    # -- homomorphic models (`<model>-he`): see patchveil.tenants.he_client -------------------
    def he_metadata(self, model: str) -> dict[str, Any]:
        """Input layout, packings and limits of the homomorphic model `model` (without "-he")."""
        return self._request("GET", f"/v2/models/{model}-he")

    def he_context(self, model: str) -> dict[str, Any] | None:
        """The digest of this tenant's public context on the endpoint, or None if it has none."""
        try:
            return self._request("GET", f"/v2/models/{model}-he/context")
        except QueryError as error:
            if " 409:" in str(error):
                return None
            raise

    def put_he_context(self, model: str, public_context: bytes) -> dict[str, Any]:
        """Upload this tenant's public context (no secret key: the endpoint refuses one)."""
        return self._request(
            "PUT",
            f"/v2/models/{model}-he/context",
            content=public_context,
            headers={"Content-Type": "application/octet-stream"},
            timeout=HE_TIMEOUT_S,
        )

    def he_infer(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one homomorphic query body ({"packing", "inputs"}); evaluations take minutes."""
        return self._request(
            "POST", f"/v2/models/{model}-he/infer", json=body, timeout=HE_TIMEOUT_S
        )

    def infer(
        self,
        model: str,
        ciphertexts: np.ndarray,
        binary: bool = True,
        candidates: int | None = None,
    ) -> QueryAnswer:
        """Send uint8 ciphertexts [N, H, W, 3]; binary-tensor encoding unless `binary=False`.

        With `candidates=k` (result privacy) the endpoint answers k labels per image in an order
        keyed by a fresh result key; the answer's `labels` are resolved here with that key and
        `candidates` holds the sets as they came back.
        """
        result_key = ResultKey() if candidates is not None else None
        images = np.ascontiguousarray(ciphertexts, dtype=np.uint8)
        tensor: dict[str, Any] = {
            "name": INPUT_NAME,
            "datatype": "UINT8",
            "shape": list(images.shape),
        }
        document: dict[str, Any] = {"inputs": [tensor]}
        if result_key is not None:
            document["parameters"] = {
                "candidates": candidates,
                "result_key": result_key.request_value(),
            }
        if binary:
            tensor["parameters"] = {"binary_data_size": images.nbytes}
            header = json.dumps(document).encode()
            answer = self._request(
                "POST",
                f"/v2/models/{model}/infer",
                content=header + images.tobytes(),
                headers={
                    "Inference-Header-Content-Length": str(len(header)),
                    "Content-Type": "application/octet-stream",
                },
            )
        else:
            tensor["data"] = images.reshape(-1).tolist()
            answer = self._request("POST", f"/v2/models/{model}/infer", json=document)
        outputs = answer.get("outputs", [])
        label = _output(outputs, "label")
        candidate = _output(outputs, "candidates")
        confidence = _output(outputs, "confidence")
        sets = (
            None
            if candidate is None
            else np.asarray(candidate["data"], dtype=np.int64).reshape(candidate["shape"])
        )
        if sets is not None and result_key is not None:
            labels = resolve(sets, result_key)
        else:
            labels = None if label is None else np.asarray(label["data"], dtype=np.int64)
        return QueryAnswer(
            labels=labels,
            confidences=np.asarray(confidence["data"] if confidence else [], dtype=np.float32),
            model_name=str(answer.get("model_name", model)),
            model_version=int(answer.get("model_version", 0)),
            candidates=sets,
        )


def query_images(
    tenant: Tenant,
    client: QueryClient,
    images: np.ndarray,
    model: str | None = None,
    binary: bool = True,
    batch_images: int = 512,
) -> QueryAnswer:
    """Encrypt `images` with the tenant's newest key (fresh per-image transforms where the cipher
    has them) and ask the endpoint, `batch_images` per request."""
    name = model or client.model_name()
    labels, confidences, version = [], [], 0
    for start in range(0, len(images), batch_images):
        batch = tenant.encrypt_query(images[start : start + batch_images])
        answer = client.infer(name, batch.images, binary=binary)
        if answer.labels is None:
            raise QueryError(f"{client.endpoint} answered without labels")
        labels.append(answer.labels)
        confidences.append(answer.confidences)
        version = answer.model_version
    return QueryAnswer(
        labels=np.concatenate(labels) if labels else np.empty(0, np.int64),
        confidences=np.concatenate(confidences) if confidences else np.empty(0, np.float32),
        model_name=name,
        model_version=version,
    )
