"""Images per second through the whole onboarding flow for 4 tenants, beside the bare cipher.

Run: `.venv/bin/python bench/onboarding_throughput.py [--images-per-tenant 2000] [--cipher conventional]`
Writes bench/results/onboarding_throughput.{json,md}. In the same run: the bare cipher encrypts
the same images in this process (each tenant's share with its own key), then the Prefect flow
`onboard_tenants` onboards the 4 tenants end to end (registry, Ray actors, key creation, shard
planning, encryption, Parquet writes, validation, publishing). The ratio is the flow's overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from patchveil.reporting import provenance, provenance_markdown, write_json, write_text

RESULTS = Path(__file__).parent / "results"
TENANTS = ("tenant-1", "tenant-2", "tenant-3", "tenant-4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-tenant", type=int, default=2000)
    parser.add_argument("--cipher", default="conventional")
    parser.add_argument("--block-size", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="patchveil-onboarding-bench-"))
    os.environ["PATCHVEIL_HOME"] = str(work / "platform")
    from patchveil.config import PlatformConfig
    from patchveil.pipelines.prefect_home import use_platform_home_for_prefect

    config = PlatformConfig.from_env()
    use_platform_home_for_prefect(config)

    import numpy as np

    from patchveil.tenants.ciphers import create_cipher
    from patchveil.tenants.keys import CipherSpec, Key
    from patchveil.tenants.loaders import default_cifar_dir, load_cifar
    from patchveil.tenants.split import split_among_tenants, write_tenant_sources

    folder = default_cifar_dir()
    if folder is None:
        raise SystemExit("onboarding_throughput: no CIFAR-10 data (set PATCHVEIL_CIFAR_DIR)")
    data = load_cifar(folder, "train")
    data = data.subset(np.arange(min(len(data), args.images_per_tenant * len(TENANTS))))
    parts = split_among_tenants(data, list(TENANTS), None, seed=0)
    sources = write_tenant_sources(parts, work / "sources", seed=0)
    total = len(data)

    spec = CipherSpec(args.cipher, args.block_size, data.image_size)
    start = time.perf_counter()
    for tenant_id, part in parts.items():
        cipher = create_cipher(Key.generate(tenant_id, spec))
        nonces = np.arange(len(part)) if cipher.per_image else None
        cipher.encrypt(part.images, nonces)
    bare_seconds = time.perf_counter() - start

    from patchveil.pipelines.onboarding import onboard_tenants
    from patchveil.pipelines.ray_runtime import ensure_ray

    ray_start = time.perf_counter()
    ensure_ray(config)
    ray_seconds = time.perf_counter() - ray_start
    plan = {
        "defaults": {"cipher": args.cipher, "block_size": args.block_size},
        "tenants": [{"tenant_id": t, "source": str(sources[t])} for t in TENANTS],
    }
    plan_file = work / "onboarding.json"
    plan_file.write_text(json.dumps(plan))
    start = time.perf_counter()
    result = onboard_tenants(str(plan_file))
    flow_seconds = time.perf_counter() - start
    rows = sum(tenant["rows"] for tenant in result["tenants"])

    meta = provenance()
    payload = {
        **meta,
        "images": total,
        "tenants": len(TENANTS),
        "cipher": args.cipher,
        "block_size": args.block_size,
        "bare_cipher_images_per_second": total / bare_seconds,
        "flow_images_per_second": total / flow_seconds,
        "flow_seconds": flow_seconds,
        "ray_start_seconds": ray_seconds,
        "rows_written": rows,
        "ratio_flow_to_bare": flow_seconds / bare_seconds,
    }
    text = "\n".join(
        [
            "# Onboarding throughput",
            "",
            provenance_markdown(meta),
            f"{total} CIFAR-10 images, {len(TENANTS)} tenants, cipher `{args.cipher}`, block "
            f"{args.block_size}; Ray started beforehand ({ray_seconds:.1f} s, not counted).",
            "",
            "| path | images/s | seconds |",
            "|---|---:|---:|",
            f"| bare cipher, in process | {total / bare_seconds:,.0f} | {bare_seconds:.2f} |",
            f"| onboarding flow (Prefect + Ray actors + Parquet) | {total / flow_seconds:,.0f} "
            f"| {flow_seconds:.2f} |",
            "",
            f"Flow time / bare cipher time: **{flow_seconds / bare_seconds:.0f}×** "
            f"({rows} rows written, including the held-out validation rows).",
        ]
    )
    print(text)
    write_json(args.out / "onboarding_throughput.json", payload)
    write_text(args.out / "onboarding_throughput.md", text + "\n")


if __name__ == "__main__":
    main()
