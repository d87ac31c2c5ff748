"""Every cipher's output is pinned: a fixed key encrypting (and decrypting) a fixed batch must
give the same bytes as when the digests below were computed, so existing ciphertexts and datasets
keep decrypting whatever the implementation does to go faster."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

from patchveil.tenants.ciphers import create_cipher, hazmat
from patchveil.tenants.ciphers.base import Cipher
from patchveil.tenants.keys import CipherSpec, Key, ParamValue

Params = tuple[tuple[str, ParamValue], ...]

# A fixed secret (not a real key): the pins depend on it, so never change it.
PINNED_SECRET = hashlib.sha256(b"patchveil cipher pins").digest()
# Nonces of every range the key store and the platform use (indices, reserved, queries).
PINNED_NONCES = (0, 1, 2**61 + 7, 2**62 + 123_456_789, 2**63 - 1)


KERNEL_IMPLEMENTATIONS = [
    "numpy",
    pytest.param(
        "numba",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("numba") is None, reason="the compiled loops need numba"
        ),
    ),
]


@pytest.fixture(params=KERNEL_IMPLEMENTATIONS)
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every pin holds for the numpy reference and for the compiled loops (`hazmat.KERNELS`)."""
    monkeypatch.setattr(hazmat, "KERNELS", request.param)
    return request.param


def pinned_cases() -> list[tuple[str, int, int, Params]]:
    cases: list[tuple[str, int, int, Params]] = []
    for image_size, block_size in ((32, 4), (64, 16)):
        for name in ("conventional", "etc", "invariant", "le", "pixel", "plain", "restricted"):
            cases.append((name, block_size, image_size, ()))
        cases.append(
            (
                "restricted",
                block_size,
                image_size,
                (("block_fraction", 0.7), ("pixel_fraction", 0.1), ("flip_fraction", 0.9)),
            )
        )
        for group in ("none", "np", "cs", "rf", "np_cs", "np_rf", "cs_rf", "np_cs_rf"):
            cases.append(("disposable", block_size, image_size, (("group", group),)))
        for group in ("px", "np_px", "cs_px", "np_cs_px"):
            cases.append(("disposable", block_size, image_size, (("group", group),)))
        cases.append(("disposable", block_size, image_size, (("group", "px"), ("window", 2))))
        for window in (1, 2, 4) if image_size == 32 else (1, 2):
            for group in ("none", "np_cs", "np_cs_rf"):
                cases.append(
                    ("disposable", block_size, image_size, (("group", group), ("window", window)))
                )
    return cases


def pinned_cipher(name: str, block_size: int, image_size: int, params: Params) -> Cipher:
    spec = CipherSpec(name, block_size, image_size, params)
    return create_cipher(
        Key("pins", "pinned-key", 1, spec, "2025-01-01T00:00:00+00:00", PINNED_SECRET)
    )


def pinned_digest(cipher: Cipher) -> str:
    """SHA-256 of encrypt(batch) then decrypt(another batch), both fixed."""
    size = cipher.spec.image_size
    images = np.random.default_rng(size).integers(
        0, 256, (len(PINNED_NONCES), size, size, 3), dtype=np.uint8
    )
    nonces = np.array(PINNED_NONCES, dtype=np.int64) if cipher.per_image else None
    digest = hashlib.sha256(cipher.encrypt(images, nonces).tobytes())
    digest.update(cipher.decrypt(images[::-1].copy(), nonces).tobytes())
    return digest.hexdigest()


def case_id(case: tuple[str, int, int, Params]) -> str:
    name, block_size, image_size, params = case
    settings = ",".join(f"{key}={value}" for key, value in params)
    return f"{name}-{image_size}px-b{block_size}" + (f"-{settings}" if settings else "")


# Computed with the implementation of commit 01304c1 (before the block-gather rewrite).
PINNED_DIGESTS: dict[str, str] = {
    "conventional-32px-b4": "07ab4a0b7ee7bad744d16972e46fc86fd9a2f5333c48e3babee54fa0fb3914a6",
    "etc-32px-b4": "591d9ef11a3588f5c76327a13a540154e3e856fd07d6eec3ce2b1349db8245d2",
    "invariant-32px-b4": "3671f648680dfc2007614107b02d687a85445eb343de3c3d607509d21e2b3504",
    "le-32px-b4": "144213a54236369f604dcb0eefc0b1fec5d9575cee93a44630cf2003e58ccb93",
    "pixel-32px-b4": "0a966e322626a0f29057bd548cc0545fb08013cc6da504d778685b8260dc7cb0",
    "plain-32px-b4": "b671f43471022fecb01ad1b512c276ba23764f1a658b7dc459a2df086f91e067",
    "restricted-32px-b4": "e9368633253d8477e55724f84831ac26bd106066e05f24e84db2d713fe3fda99",
    "restricted-32px-b4-block_fraction=0.7,pixel_fraction=0.1,flip_fraction=0.9": "a47e79db5a7a97c1d5b9340f5575fad8bd51023a4b49eee5d8c88041bb578cb2",
    "disposable-32px-b4-group=none": "779d6dbe268db2a1dd807fce805efc24c35c41676564d7c06ae7788b068774c1",
    "disposable-32px-b4-group=np": "bc64776f319c08e9ab8cfa730fb88bbc52452b934e0f6d8ab754004aee565ae3",
    "disposable-32px-b4-group=cs": "74de780585b9a6321aa907d8e2ed5d409dbff9cbc6ece841aacd23a3e30a5823",
    "disposable-32px-b4-group=rf": "48add1818a3c3c50cec24f28e7f628abc9ddd6e7884102e0c933ba9bfbfb9099",
    "disposable-32px-b4-group=np_cs": "a75846d4b150260d24b0490fdc330d3e770420deaeb907b303a6d2fb868367c4",
    "disposable-32px-b4-group=np_rf": "d124890ff9fbaa952292f6d56a7cb9cae6f2dad094f3bf247e6da92147662899",
    "disposable-32px-b4-group=cs_rf": "cef99e5cfc1f0cfb27ba146636754f7737fdb7822c1c7a092c40428420353bf7",
    "disposable-32px-b4-group=np_cs_rf": "04b8dfa211190af3edc67fdd9b9a6c07b35eb1d65210e3201b077d3d74ad9e10",
    # The pixel-shuffle groups, pinned when their draw became Fisher–Yates (issue 15).
    "disposable-32px-b4-group=px": "0e1addeba9ed9b2efd514914f5145d3c4bbe5f254a62269a8d26e9f5ba99b394",
    "disposable-32px-b4-group=np_px": "6542cc861a30c39c4caa05222a42677820ba4b383a6fdbeee5229d7a6ed428b9",
    "disposable-32px-b4-group=cs_px": "30f1bfc95e8e7a77deb1acd030d759e969df4536c5d53bd27df574e2d982d194",
    "disposable-32px-b4-group=np_cs_px": "d5cb1297dd00cc49bad64d03f3061d07d5ebf72ce4a1c3ffcc7985d071982d7c",
    "disposable-32px-b4-group=px,window=2": "4268943ab9ee774924c7566306c961aba9c5d684ecde743f8bf576a23be134be",
    "disposable-32px-b4-group=none,window=1": "b671f43471022fecb01ad1b512c276ba23764f1a658b7dc459a2df086f91e067",
    "disposable-32px-b4-group=np_cs,window=1": "c2c77316ff444764b2c06c78860e855210045803ada8cb27d8c304cb95dd5044",
    "disposable-32px-b4-group=np_cs_rf,window=1": "7a2f07b2f9923f63bdb0f0aa249217df137a347cea3ac85306371d01febf93e0",
    "disposable-32px-b4-group=none,window=2": "4d3540c2d7c3271b72ac5a77c55e4e4984d8d4bcc525733bcf0e0f0f045813ba",
    "disposable-32px-b4-group=np_cs,window=2": "caa2b45f6ccfbc2aa1971c6285d96b196859a2c6918fe3fc6e047d3ad383a542",
    "disposable-32px-b4-group=np_cs_rf,window=2": "bc835cb4db793be2ec39a89c188b8eebad466269ff0cbf7f1406ec52b6455f68",
    "disposable-32px-b4-group=none,window=4": "c8d1dc8239d3904e0b9418bf974ccdb70e6b30e3193f7c3c60228cb22d9289d1",
    "disposable-32px-b4-group=np_cs,window=4": "bb3a630fb01e0c8d1007a5cb9e138945e1fdf24fb8b1a5494f917772ddd8796e",
    "disposable-32px-b4-group=np_cs_rf,window=4": "7bc49b50004f210c3d7d435af9ca6d9726bf6b567a6864af9d06a813b41e8245",
    "conventional-64px-b16": "5451f6021aa11fed30d5de01e0e358c49edd167e229a2d11f966e1d4e4a99117",
    "etc-64px-b16": "a696c42bd7eb96482518244b828e3ef958732afdbb82729e4a588177b14231a9",
    "invariant-64px-b16": "5eefc5e6138ea33a9a5075ee914cdb93ff5f93011b627e6b5745d27487442af6",
    "le-64px-b16": "9533746da6d22f06d16b2f874e62eb3e563c4addef3788fe01487f375089bfa8",
    "pixel-64px-b16": "e9a0661828c125a929b87bbadfd1e94bc98663a47b8f3b3f680b50b6df55f6d2",
    "plain-64px-b16": "671ea9c55ea553b856c7c00900b16feb1c5827fdd9688d9267647179efbbe3d1",
    "restricted-64px-b16": "849d9257d00a92e124b452ec49a2c05127550be463271067a5514b47cdd8b5cd",
    "restricted-64px-b16-block_fraction=0.7,pixel_fraction=0.1,flip_fraction=0.9": "9aed94d56d08d1ee9f523cfb636e917f391e6409c9bd2b536937c29ff5837b95",
    "disposable-64px-b16-group=none": "c47c4b43e34323855dbbb766256b2c1b728a631e227d94308f6aa26beeb5ccfb",
    "disposable-64px-b16-group=np": "73eb273c1c8c867e7af927ab85e10538afcabc0160bdabf286dddd7e7d3445b5",
    "disposable-64px-b16-group=cs": "ab6d326f80caf192c9d8396ab5b8adbf07da1d606b41ca06822807afe84d0aee",
    "disposable-64px-b16-group=rf": "d57e747ba67c125d7fd07add4ecfd7a711406f42530e90a6bf8cda62c7933a8e",
    "disposable-64px-b16-group=np_cs": "71ec227199587f037f964f974021d23da4a40085c43d2b4e0042e505f8039333",
    "disposable-64px-b16-group=np_rf": "a619faed6f6c2c8d1bca84ac987f94d2600991b91a8effd14a9b87b4dc7ea72f",
    "disposable-64px-b16-group=cs_rf": "ab016816306bd1d59b233598765fa0323fda0d2254ac9767fc981148237bc069",
    "disposable-64px-b16-group=np_cs_rf": "59eb5c87b02015148a307e319baf2bc2718dfb0013fc337154d0b5a75ae9543c",
    "disposable-64px-b16-group=px": "4b1c1e0acb702a8981d48d2f2b93dc9ad0a72730d38c5cc3e72d3bf4be654156",
    "disposable-64px-b16-group=np_px": "1432358ce2d0ba41d64b1d98edb7dc05df8f4aed24b1df395aeadd9128c09ae6",
    "disposable-64px-b16-group=cs_px": "1d06560c2fa3eaee6c26bddd617bcd747a50d04b55ce68e0fd576b7824d62adb",
    "disposable-64px-b16-group=np_cs_px": "4f505dbbf0888275b4c8857e5dc60226724c40945a2110f62e058eaeace35f7f",
    "disposable-64px-b16-group=px,window=2": "e808c7768d7304a0e50294f2de80fe0cae1d9cdada37d784184bd5b43cdf1d0c",
    "disposable-64px-b16-group=none,window=1": "671ea9c55ea553b856c7c00900b16feb1c5827fdd9688d9267647179efbbe3d1",
    "disposable-64px-b16-group=np_cs,window=1": "4941e6ecf0eecff67454568739a5e4edb7a3559dfe591b0d799c85f301c10e1c",
    "disposable-64px-b16-group=np_cs_rf,window=1": "a6e9db0508b9e720a7f3a575d781ea8b83daea119fce34c375083cf234043d9d",
    "disposable-64px-b16-group=none,window=2": "88c6dad6b1bc8c317ffb5a903478385aa6d81435ad3eb4b0c0c66a90be20936c",
    "disposable-64px-b16-group=np_cs,window=2": "39bf83fc401fbe8628427d5232104e46fd45bf779076b4254dac643ef409fb88",
    "disposable-64px-b16-group=np_cs_rf,window=2": "e0948f4561aad43eb6b3e956ed582519fbb587032db02c7fc636e0cfebb84f47",
}


@pytest.mark.parametrize("case", pinned_cases(), ids=case_id)
def test_cipher_output_is_pinned(case: tuple[str, int, int, Params], kernels: str) -> None:
    assert pinned_digest(pinned_cipher(*case)) == PINNED_DIGESTS[case_id(case)]


def batch_cases() -> list[tuple[str, int, int, Params, int]]:
    """The bench geometry (224 px, 16-px blocks) and a batch of many images (many nonces)."""
    cases: list[tuple[str, int, int, Params, int]] = []
    names = ("conventional", "disposable", "etc", "invariant", "le", "pixel", "plain", "restricted")
    for image_size, block_size, count, window in ((224, 16, 3, 7), (32, 4, 300, 4)):
        for name in names:
            cases.append((name, block_size, image_size, (), count))
        cases.append(
            ("disposable", block_size, image_size, (("group", "none"), ("window", window)), count)
        )
        cases.append(("disposable", block_size, image_size, (("group", "np_cs_rf"),), count))
        cases.append(("disposable", block_size, image_size, (("group", "px"),), count))
    cases.append(("disposable", 4, 32, (("group", "np_cs_rf"), ("window", 2)), 300))
    return cases


def batch_digest(cipher: Cipher, count: int) -> str:
    """SHA-256 of encrypt then decrypt of `count` fixed images, nonces spread over 2^61 + 7919·i."""
    size = cipher.spec.image_size
    images = np.random.default_rng(size + count).integers(
        0, 256, (count, size, size, 3), dtype=np.uint8
    )
    nonces = np.arange(count, dtype=np.int64) * 7919 + 2**61 if cipher.per_image else None
    digest = hashlib.sha256(cipher.encrypt(images, nonces).tobytes())
    digest.update(cipher.decrypt(images[::-1].copy(), nonces).tobytes())
    return digest.hexdigest()


def batch_case_id(case: tuple[str, int, int, Params, int]) -> str:
    return f"{case_id(case[:4])}-{case[4]}images"


# Computed with the implementation of commit 2a514d7 (before the issue-15 speed work).
BATCH_DIGESTS: dict[str, str] = {
    "conventional-224px-b16-3images": "105ccc172a9a07767b419810561bda71e495a6a003290a90d2672a725075ea10",
    "disposable-224px-b16-3images": "4d5963982412e43e9b577836c7bc85ef136589751b235599d1d7efcc3e0767d0",
    "etc-224px-b16-3images": "76501175402325f84007a1e0ee51c500c567a70b16ab1467b1f7e082fe85f677",
    "invariant-224px-b16-3images": "4f96c43173f09254ff6c8b877aee911ce6674d84a13bde81d60932bfb339509a",
    "le-224px-b16-3images": "8c1f3713ce6ee46659e6745add8f2240623967529ca320470562db4131192dc9",
    "pixel-224px-b16-3images": "29f697936d141d56a9272afffa26240e60b0866d6cd582d894b49546194ec600",
    "plain-224px-b16-3images": "e811c5db632d430d0801a37e52e3a5722ac984d732cac92247a98117f39d99c5",
    "restricted-224px-b16-3images": "b5b827025c0fbfbe1440d2c5fdf32f7e49c4b638ea1f7fbb2eb48c6f9a1a2866",
    "disposable-224px-b16-group=none,window=7-3images": "0c794b8d9db93002c62929a4708893bf026f46ede5c064b04bddf012625abcf1",
    "disposable-224px-b16-group=np_cs_rf-3images": "6576579f3b029895a5666a622a15a89bbf1a8f31b917812d4d20ad722c9deb49",
    "disposable-224px-b16-group=px-3images": "acaffffca4722aba6ad5bdc67160d0a212ed9d78fed61385ff7d93bd189481af",
    "conventional-32px-b4-300images": "4683ef2de450922f7c3ba20f585233b2ebfb898655c0df386b1a0b74e2c24a60",
    "disposable-32px-b4-300images": "73b20bf5853adf0da3b55cf88cbd2b6fb922ed99500aa5b7cdc25955f816cce8",
    "etc-32px-b4-300images": "50d5e49dbe8a8ea4fbbce5c29b2b9b9fe5f1df7c42460eda41cef6e551f9d655",
    "invariant-32px-b4-300images": "657a6bab71886fbd941251093bf99e7f8b80fb0678b9fc29c81638f3b45826c8",
    "le-32px-b4-300images": "ed7f023e0b6e6a88e5a9ff29243fcf02a060ed0dea22572ca4f6c445387309b9",
    "pixel-32px-b4-300images": "a370cff089106ce97ac1fb925684befa2b6d44ef919231874af25ca8cad75619",
    "plain-32px-b4-300images": "1156e2d2caeb6a45f7856e0d134facfabbb1c6e66ca4fcb5054b2a3ff28e0339",
    "restricted-32px-b4-300images": "70efe7fac89484bd16ef50bec0580d7c3a2ab7dc6b722143c3d4ef0aa7de81b3",
    "disposable-32px-b4-group=none,window=4-300images": "d4a3b180041d3a390ebab8582bcb620d00201b6c0347c036c4749c0cc772444f",
    "disposable-32px-b4-group=np_cs_rf-300images": "076b4eb83928aec5705c9b044ca7f08823535cbd8f0c7df71ac6a2fa1deac95b",
    "disposable-32px-b4-group=px-300images": "ccc13748117fc18d645135e7c63a1aeb351b28e57b6eddfc6147eba3dc76cf78",
    "disposable-32px-b4-group=np_cs_rf,window=2-300images": "a217f75937a5ad5e7a80513fe99fb529194cf995a295c945ae7a715c3f8e6451",
}


@pytest.mark.parametrize("case", batch_cases(), ids=batch_case_id)
def test_cipher_output_is_pinned_on_large_images_and_batches(
    case: tuple[str, int, int, Params, int], kernels: str
) -> None:
    assert batch_digest(pinned_cipher(*case[:4]), case[4]) == BATCH_DIGESTS[batch_case_id(case)]
