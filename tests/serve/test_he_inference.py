"""The platform's homomorphic evaluator: right answers, public contexts only, no secret crosses."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts

from patchveil.models.square_nets import InputLayout, SquareNet, im2col_with_one, plain_logits
from patchveil.serve.he_inference import (
    HEEvaluator,
    HEQueryError,
    HERequest,
    HEResponse,
    PublicContexts,
)
from patchveil.tenants.he_keys import CKKSParameters, TenantHEContext, make_context


def assert_logits_match(encrypted: np.ndarray, plain: np.ndarray) -> None:
    """CKKS logits are the plain ones times one positive factor near 1 (TenSEAL's rescaling drift
    with 26-bit primes, the same for every logit since biases ride on a constant 1), plus noise
    of a few 1e-4. A wrong layout or weight would be off by whole units."""
    factor = float((encrypted * plain).sum() / (plain * plain).sum())
    assert 0.9 < factor < 1.1
    np.testing.assert_allclose(encrypted, factor * plain, atol=0.01)
    np.testing.assert_array_equal(encrypted.argmax(axis=-1), plain.argmax(axis=-1))


def tiny_net(pool: str = "none") -> SquareNet:
    """4×4 grey images, 2×2 windows at stride 2: every layer kept small so tests stay fast."""
    rng = np.random.default_rng(7)
    layout = InputLayout((4, 4, 1), kernel_size=2, stride=2)
    channels, hidden, classes = 2, 3, 2
    features = channels * (layout.windows if pool == "none" else 1)
    return SquareNet(
        name="tiny",
        layout=layout,
        pool=pool,  # type: ignore[arg-type]
        window_weight=rng.normal(size=(channels, layout.window_size)),
        window_bias=rng.normal(size=channels) * 0.1,
        hidden_weight=rng.normal(size=(hidden, features)) * 0.5,
        hidden_bias=rng.normal(size=hidden) * 0.1,
        output_weight=rng.normal(size=(classes, hidden)) * 0.5,
        output_bias=rng.normal(size=classes) * 0.1,
    )


def secret_key_fragment(context: ts.Context) -> bytes:
    """64 bytes from the middle of the serialized secret key: what a leak would contain."""
    only = {"save_public_key": False, "save_galois_keys": False, "save_relin_keys": False}
    with_secret = context.serialize(save_secret_key=True, **only)
    without = context.serialize(save_secret_key=False, **only)
    assert len(with_secret) - len(without) > 10_000  # nearly all of it is the key
    middle = len(with_secret) // 2
    return with_secret[middle : middle + 64]


@pytest.fixture(scope="module")
def tenant() -> TenantHEContext:
    return TenantHEContext("acme", "test", CKKSParameters(), make_context(CKKSParameters()))


@pytest.fixture(scope="module")
def tenant_context(tenant: TenantHEContext) -> ts.Context:
    return tenant.context


@pytest.fixture(scope="module")
def public_contexts(tenant: TenantHEContext) -> dict[str, bytes]:
    """What the tenant uploads: without Galois keys (throughput) and with them (latency)."""
    return {
        "throughput": tenant.public_context(galois_keys=False),
        "latency": tenant.public_context(galois_keys=True),
    }


@pytest.fixture(scope="module")
def parsed() -> PublicContexts:
    """One parse of each ~100 MB public context for the whole module, as the endpoint keeps."""
    return PublicContexts()


def images(count: int) -> np.ndarray:
    return np.random.default_rng(count).random((count, 4, 4, 1))


def throughput_inputs(context: ts.Context, batch: np.ndarray) -> list[bytes]:
    rows = np.concatenate([batch.reshape(len(batch), -1).T, np.ones((1, len(batch)))])
    return [ts.ckks_vector(context, row.tolist()).serialize() for row in rows]


def latency_inputs(context: ts.Context, net: SquareNet, batch: np.ndarray) -> list[bytes]:
    return [
        ts.enc_matmul_encoding(context, windows.tolist()).serialize()
        for windows in im2col_with_one(net.layout, batch)
    ]


@pytest.mark.parametrize("pool", ["none", "mean"])
def test_throughput_packing_matches_the_plain_model(
    pool: str, tenant_context: ts.Context, public_contexts: dict[str, bytes]
) -> None:
    net, batch = tiny_net(pool), images(20)
    outputs = HEEvaluator(net).evaluate(
        public_contexts["throughput"], throughput_inputs(tenant_context, batch), "throughput"
    )
    assert len(outputs) == net.classes  # one ciphertext per class, one image per slot
    logits = np.array([ts.ckks_vector_from(tenant_context, out).decrypt()[:20] for out in outputs])
    assert_logits_match(logits.T, plain_logits(net, batch))


def test_latency_packing_matches_the_plain_model(
    tenant_context: ts.Context, public_contexts: dict[str, bytes], parsed: PublicContexts
) -> None:
    for pool in ("none", "mean"):
        net, batch = tiny_net(pool), images(1)
        outputs = HEEvaluator(net, parsed).evaluate(
            public_contexts["latency"], latency_inputs(tenant_context, net, batch), "latency"
        )
        assert len(outputs) == 1  # one ciphertext per image
        logits = ts.ckks_vector_from(tenant_context, outputs[0]).decrypt()[: net.classes]
        assert_logits_match(np.array(logits), plain_logits(net, batch)[0])


def test_the_platform_context_cannot_decrypt(
    tenant_context: ts.Context, public_contexts: dict[str, bytes]
) -> None:
    net = tiny_net()
    outputs = HEEvaluator(net).evaluate(
        public_contexts["throughput"], throughput_inputs(tenant_context, images(3)), "throughput"
    )
    platform_context = ts.context_from(public_contexts["throughput"])
    assert not platform_context.has_secret_key()
    answer = ts.ckks_vector_from(platform_context, outputs[0])
    with pytest.raises(ValueError, match="secret"):
        answer.decrypt()


def test_a_context_with_a_secret_key_is_refused(tenant_context: ts.Context) -> None:
    private = tenant_context.serialize(save_secret_key=True, save_galois_keys=False)
    inputs = throughput_inputs(tenant_context, images(1))
    with pytest.raises(HEQueryError, match="secret key") as refused:
        HEEvaluator(tiny_net()).evaluate(private, inputs, "throughput")
    assert secret_key_fragment(tenant_context) not in str(refused.value).encode()


def test_no_secret_key_bytes_in_logs_files_or_responses(
    tenant_context: ts.Context,
    public_contexts: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fragment = secret_key_fragment(tenant_context)
    assert fragment in tenant_context.serialize(save_secret_key=True)  # the probe finds a leak
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    net = tiny_net()
    request = HERequest("throughput", throughput_inputs(tenant_context, images(4)))
    response = HEEvaluator(net).answer(public_contexts["throughput"], request)
    body = str(response.to_json()).encode()
    for payload in (*public_contexts.values(), *response.outputs, body, caplog.text.encode()):
        assert fragment not in payload
    assert list(tmp_path.iterdir()) == []  # the evaluator writes nothing


def test_serialized_bytes_cross_never_pickles(
    tenant_context: ts.Context, public_contexts: dict[str, bytes]
) -> None:
    request = HERequest("throughput", throughput_inputs(tenant_context, images(2)))
    wire = HERequest.from_json(request.to_json())
    assert wire == request
    response = HEEvaluator(tiny_net()).answer(public_contexts["throughput"], wire)
    again = HEResponse.from_json(response.to_json())
    assert again == response and again.model_name == "tiny-he"
    for output in response.outputs:
        assert isinstance(output, bytes) and not output.startswith(b"\x80")  # pickle's opcode
        with pytest.raises(pickle.UnpicklingError):
            pickle.loads(output)


def test_malformed_queries_name_what_is_wrong(
    tenant_context: ts.Context, public_contexts: dict[str, bytes], parsed: PublicContexts
) -> None:
    evaluator, inputs = HEEvaluator(tiny_net()), throughput_inputs(tenant_context, images(2))
    with pytest.raises(HEQueryError, match="packing 'simd' is not one of"):
        evaluator.evaluate(public_contexts["throughput"], inputs, "simd")
    with pytest.raises(HEQueryError, match="one of constant 1s: 17"):
        evaluator.evaluate(public_contexts["throughput"], inputs[:-1], "throughput")
    with pytest.raises(HEQueryError, match="input 3 is not a serialized CKKS vector"):
        evaluator.evaluate(
            public_contexts["throughput"], [*inputs[:3], b"junk", *inputs[4:]], "throughput"
        )
    with pytest.raises(HEQueryError, match="not a serialized TenSEAL context"):
        evaluator.evaluate(b"not a context", inputs, "throughput")
    with pytest.raises(HEQueryError, match="a latency query carries 1 to 64 images, not 65"):
        evaluator.evaluate(public_contexts["latency"], inputs[:1] * 65, "latency")
    with pytest.raises(HEQueryError, match="Galois keys"):
        evaluator.evaluate(public_contexts["throughput"], inputs[:1], "latency")
    with pytest.raises(HEQueryError, match="latency-packed image holds 32 values"):
        HEEvaluator(tiny_net(), parsed).evaluate(public_contexts["latency"], inputs[:1], "latency")
    with pytest.raises(HEQueryError, match="base64"):
        HERequest.from_json({"packing": "latency", "inputs": ["not base64!"]})
