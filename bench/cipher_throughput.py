"""Throughput and peak memory of every cipher at 32 and 224 px, beside a numpy copy in the same run.

Run: `.venv/bin/python bench/cipher_throughput.py [--count-32 20000] [--count-224 2000] [--repeats 3]
[--kernels numba|numpy] [--threads N]`. Writes bench/results/cipher_throughput.{json,md}.

Every measurement runs in its own subprocess, which loads the batch from a `.npy` file (as the
CLI does), runs one operation (`copy`, or one cipher's encrypt or decrypt) `--repeats` times and
reports its best time and its peak resident memory (getrusage), so no run inherits another's
memory; every output is a fresh allocation whose page faults its operation pays. Two ratios per cipher, both against the copy measured in the same run:
- throughput: copy time / cipher time (goal ≥ 0.5);
- memory: (peak − the loaded input − one output) / CHUNK_BYTES (goal ≤ 2).
The file column is load + operation + save of the whole batch, as `patchveil encrypt` does it.
Three reference operations, measured the same way, bound what the ciphers can reach (REFERENCES).

The ciphers' loops run compiled (numba) or in numpy (`--kernels`, default PATCHVEIL_KERNELS or
numba where installed); `kernels` in the results says which. Before a cipher's batch is loaded,
its worker makes a first call on a few images: the compiled loops load from numba's cache (or
compile), and that one-off time and memory per process are reported apart (`first_call`), not
counted in the chunk memory, which is working memory. The loops run in the calling thread (the
library's default); with numba, every encrypt is measured once more with them split over
`--threads` threads (PATCHVEIL_KERNEL_THREADS), the `encrypt_threads` column.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from patchveil.reporting import provenance, provenance_markdown, write_json, write_text
from patchveil.tenants.ciphers import available_ciphers, create_cipher, hazmat
from patchveil.tenants.ciphers.base import CHUNK_BYTES, Cipher
from patchveil.tenants.keys import CipherSpec, Key

RESULTS = Path(__file__).parent / "results"
# (image size, block size) of the two geometries: CIFAR-like and ImageNet-like ViT patches.
GEOMETRIES = ((32, 4), (224, 16))


def settings_for(image_size: int, block_size: int) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Every registered cipher with its defaults, and the disposable settings users pick: the
    default preset's pixel shuffle (`px`, whole image) among them."""
    side = image_size // block_size
    window = 7 if side % 7 == 0 else side // 2
    return [(name, ()) for name in available_ciphers()] + [
        ("disposable", (("group", "none"), ("window", window))),
        ("disposable", (("group", "np_cs_rf"),)),
        ("disposable", (("group", "px"),)),
    ]


def label(name: str, params: tuple[tuple[str, Any], ...]) -> str:
    return name + "".join(f" {key}={value}" for key, value in params)


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def kernels_in_use() -> dict[str, Any]:
    """Which implementation runs the cipher loops in this process, and on how many threads."""
    threads = 1
    if hazmat.KERNELS == "numba":
        from patchveil.tenants.ciphers import kernels

        threads = kernels.THREADS
    return {"implementation": hazmat.KERNELS, "threads": threads}


def first_call(cipher: Cipher, image_size: int) -> dict[str, Any]:
    """Encrypt and decrypt a few images (enough for the threaded loops) with a cipher of the
    benchmarked spec: the one-off cost of loading (or compiling) its loops, time and memory."""
    before = resident_bytes()
    begin = time.perf_counter()
    count = 2**20 // (3 * image_size**2) + 2
    images = np.zeros((count, image_size, image_size, 3), dtype=np.uint8)
    nonces = np.arange(count, dtype=np.int64) if cipher.per_image else None
    cipher.decrypt(cipher.encrypt(images, nonces), nonces)
    return {"seconds": time.perf_counter() - begin, "bytes": resident_bytes() - before}


def worker(task: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: see the module docstring."""
    warm_up = None
    if task["operation"] in ("encrypt", "decrypt"):
        params = tuple((key, value) for key, value in task["params"])
        spec = CipherSpec(task["cipher"], task["block_size"], task["image_size"], params)
        warm_up = first_call(create_cipher(Key.generate("bench", spec)), task["image_size"])
    start = time.perf_counter()
    images = np.load(task["input"])
    load_seconds = time.perf_counter() - start
    loaded = resident_bytes()
    if task["operation"] == "copy":

        def operation() -> np.ndarray:
            return images.copy()

    elif task["operation"] in REFERENCES:
        operation = reference_operation(task["operation"], images, task["block_size"])
    else:
        params = tuple((key, value) for key, value in task["params"])
        spec = CipherSpec(task["cipher"], task["block_size"], images.shape[1], params)
        cipher = create_cipher(Key.generate("bench", spec))
        nonces = np.arange(len(images), dtype=np.int64) if cipher.per_image else None
        inverse = task["operation"] == "decrypt"

        def operation() -> np.ndarray:
            return cipher.decrypt(images, nonces) if inverse else cipher.encrypt(images, nonces)

    times = []
    out = None
    for _ in range(task["repeats"]):
        out = None  # the previous output is freed first: one output at a time
        begin = time.perf_counter()
        out = operation()
        times.append(time.perf_counter() - begin)
    assert out is not None
    save_seconds = 0.0
    if task["operation"] in ("copy", "encrypt"):  # the file column: load + encrypt (or copy) + save
        begin = time.perf_counter()
        np.save(task["output"], out)
        save_seconds = time.perf_counter() - begin
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "seconds": min(times),
        "file_seconds": load_seconds + min(times) + save_seconds,
        "peak_bytes": peak,
        "beyond_input_and_output_bytes": peak - loaded - out.nbytes,
        "kernels": kernels_in_use(),
        "first_call": warm_up,
    }


REFERENCES = {
    "byte_gather": "numpy gather of every byte (np.take, one index per byte)",
    "torch_gather": "torch index_select of every byte on the CPU",
    "disposable_draw": "the disposable cipher's SHAKE-256 draw alone (16 bytes per block)",
    "pixel_draw": "the `px` pixel orders' SHAKE-256 draw alone (one 8-byte word per ≤ 48 bits of choice)",
}
"""Operations that bound what a cipher can reach (measured like the ciphers, not ciphers): a
cipher that permutes the bytes inside a block needs at least the byte gather; the disposable
cipher needs at least its per-image draw."""


def reference_operation(name: str, images: np.ndarray, block_size: int) -> Callable[[], np.ndarray]:
    count = len(images)
    flat = images.reshape(count, -1)
    # A fixed permutation from numpy's PRNG: a benchmark input, not key material.
    source = np.random.default_rng(0).permutation(flat.shape[1])
    if name == "byte_gather":
        return lambda: np.take(flat, source, axis=1, mode="wrap")
    if name == "torch_gather":
        import torch

        index = torch.from_numpy(source)
        return lambda: torch.from_numpy(flat).index_select(1, index).numpy()
    key = Key.generate("bench", CipherSpec("disposable", block_size, images.shape[1]))
    blocks = (images.shape[1] // block_size) ** 2
    label, per_block = "disposable", 16
    if name == "pixel_draw":
        label, per_block = "disposable-pixels", 8 * hazmat.pixel_words_per_block(block_size**2)
    draw_bytes = per_block * blocks

    def draw() -> np.ndarray:
        heads = [key.keystream(f"{label}/{nonce}").head(draw_bytes) for nonce in range(count)]
        return np.frombuffer(b"".join(heads), dtype=np.uint8)

    return draw


def measure(task: dict[str, Any]) -> dict[str, Any]:
    # A fixed mmap threshold: every large array is a fresh mapping whose pages the operation
    # that writes it faults in, the copy as much as a cipher (glibc would otherwise reuse freed
    # heap for whichever operation happens to allocate fewer temporaries, and time that alone).
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**16)}
    if "threads" in task:
        environment["PATCHVEIL_KERNEL_THREADS"] = str(task["threads"])
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(task)],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_geometry(
    image_size: int, block_size: int, count: int, repeats: int, threads: int, folder: Path
) -> dict[str, Any]:
    """Every cipher's encrypt and decrypt in the default setting, and (`threads` > 1) encrypt
    again with the compiled loops split over `threads` threads (`encrypt_threads`)."""
    images = np.random.default_rng(image_size).integers(
        0, 256, (count, image_size, image_size, 3), dtype=np.uint8
    )
    source = folder / f"images_{image_size}.npy"
    np.save(source, images)
    del images
    base = {
        "input": str(source),
        "output": str(folder / "out.npy"),
        "repeats": repeats,
        "image_size": image_size,
    }
    # The copy is quick: more runs, before and after the ciphers, make its best time as
    # undisturbed by the rest of the machine as theirs.
    copy_task = {**base, "operation": "copy", "repeats": max(repeats, 5)}
    copy = measure(copy_task)
    rows = []
    # Row key: (operation, extra task settings).
    measured: dict[str, tuple[str, dict[str, Any]]] = {
        "encrypt": ("encrypt", {}),
        "decrypt": ("decrypt", {}),
    }
    if threads > 1:
        measured["encrypt_threads"] = ("encrypt", {"threads": threads})
    for name, params in settings_for(image_size, block_size):
        row: dict[str, Any] = {"cipher": label(name, params)}
        for key, (operation, settings) in measured.items():
            result = measure(
                {
                    **base,
                    **settings,
                    "operation": operation,
                    "cipher": name,
                    "block_size": block_size,
                    "params": list(params),
                }
            )
            row[key] = result
            row[f"{key}_throughput_ratio"] = copy["seconds"] / result["seconds"]
            row[f"{key}_memory_chunks"] = result["beyond_input_and_output_bytes"] / CHUNK_BYTES
        row["file_throughput_ratio"] = copy["file_seconds"] / row["encrypt"]["file_seconds"]
        rows.append(row)
        print(image_size, row["cipher"], f"{row['encrypt_throughput_ratio']:.2f}", flush=True)
    references = {}
    for name in REFERENCES:
        result = measure({**base, "operation": name, "block_size": block_size})
        references[name] = result
    copy_after = measure(copy_task)
    if copy_after["seconds"] < copy["seconds"]:
        # A faster copy only lowers every ratio: the ciphers are compared with the better one.
        for row in rows:
            for operation in measured:
                row[f"{operation}_throughput_ratio"] = (
                    copy_after["seconds"] / row[operation]["seconds"]
                )
        copy = {**copy, "seconds": copy_after["seconds"]}
    if copy_after["file_seconds"] < copy["file_seconds"]:
        for row in rows:
            row["file_throughput_ratio"] = (
                copy_after["file_seconds"] / row["encrypt"]["file_seconds"]
            )
        copy = {**copy, "file_seconds": copy_after["file_seconds"]}
    for result in references.values():
        result["throughput_ratio"] = copy["seconds"] / result["seconds"]
    source.unlink()
    return {
        "image_size": image_size,
        "block_size": block_size,
        "images": count,
        "batch_bytes": count * image_size * image_size * 3,
        "threads": threads if threads > 1 else None,
        "copy": copy,
        "references": references,
        "rows": rows,
    }


def markdown(meta: dict[str, Any], geometries: list[dict[str, Any]], repeats: int) -> str:
    mib = 2**20
    lines = [
        "# Cipher throughput and memory",
        "",
        provenance_markdown(meta),
        f"Random uint8 images; best of {repeats} runs per operation, each operation in its own "
        f"process. Chunk: CHUNK_BYTES = {CHUNK_BYTES / mib:.0f} MiB.",
        "Throughput ratio = copy time / cipher time (goal ≥ 0.5). Memory = (peak RSS − loaded "
        "input − one output) / chunk (goal ≤ 2). File = load + operation + save, ratio to the "
        "same with the copy.",
        kernels_markdown(meta["kernels"], geometries),
    ]
    for geometry in geometries:
        copy = geometry["copy"]
        count, size = geometry["images"], geometry["image_size"]
        lines += [
            "",
            f"## {size} px, block {geometry['block_size']}: {count} images "
            f"({geometry['batch_bytes'] / mib:.0f} MiB)",
            "",
            f"Copy: {copy['seconds']:.3f} s ({count / copy['seconds']:,.0f} images/s), "
            f"{(copy['beyond_input_and_output_bytes']) / CHUNK_BYTES:.2f} chunks beyond input and "
            f"output; load + copy + save {copy['file_seconds']:.2f} s.",
            "Bounds measured the same way (ratio to the copy): "
            + "; ".join(
                f"{REFERENCES[name]} {result['throughput_ratio']:.2f}"
                for name, result in geometry["references"].items()
            )
            + ".",
            "",
        ]
        threads = geometry.get("threads")
        threaded = f" encrypt ratio, {threads} threads |" if threads else ""
        lines += [
            "| cipher | encrypt images/s | encrypt ratio | decrypt ratio |"
            + threaded
            + " file ratio | encrypt memory (chunks) | decrypt memory (chunks) | peak RSS MiB |",
            "|---|" + "---:|" * (8 if threads else 7),
        ]
        for row in geometry["rows"]:
            threaded = f" {row['encrypt_threads_throughput_ratio']:.2f} |" if threads else ""
            lines.append(
                f"| {row['cipher']} | {count / row['encrypt']['seconds']:,.0f} | "
                f"{row['encrypt_throughput_ratio']:.2f} | {row['decrypt_throughput_ratio']:.2f} |"
                + threaded
                + f" {row['file_throughput_ratio']:.2f} | {row['encrypt_memory_chunks']:.2f} | "
                f"{row['decrypt_memory_chunks']:.2f} | "
                f"{max(row['encrypt']['peak_bytes'], row['decrypt']['peak_bytes']) / mib:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def kernels_markdown(kernels: dict[str, Any], geometries: list[dict[str, Any]]) -> str:
    """One line: which loops ran, and the one-off cost of their first call in a process."""
    if kernels["implementation"] == "numpy":
        return "Cipher loops: numpy (`--kernels numpy`)."
    first_calls = [
        row[operation]["first_call"]
        for geometry in geometries
        for row in geometry["rows"]
        for operation in ("encrypt", "decrypt")
    ]
    seconds = [call["seconds"] for call in first_calls]
    mib = [call["bytes"] / 2**20 for call in first_calls]
    threads = kernels["threads"]
    where = "in the calling thread" if threads == 1 else f"on {threads} threads from 1 MiB"
    return (
        f"Cipher loops: numba, compiled, {where} (PATCHVEIL_KERNEL_THREADS). Their first call "
        "in a process (loops from numba's cache, not counted above): "
        f"{min(seconds):.2f}–{max(seconds):.2f} s and {min(mib):.0f}–{max(mib):.0f} MiB of "
        "resident code and runtime (numba, LLVM), once per process."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count-32", type=int, default=20000, help="images at 32 px")
    parser.add_argument("--count-224", type=int, default=2000, help="images at 224 px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kernels",
        choices=hazmat.KERNEL_CHOICES,
        default=hazmat.KERNELS,
        help="what runs the cipher loops (default: PATCHVEIL_KERNELS, else numba where installed)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="also encrypt with the compiled loops on this many threads (≤ 1: skip; default: "
        "the CPU count)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    os.environ["PATCHVEIL_KERNELS"] = hazmat.KERNELS = args.kernels  # and every worker's
    counts = {32: args.count_32, 224: args.count_224}
    threads = args.threads if args.kernels == "numba" else 1
    with tempfile.TemporaryDirectory(prefix="cipher_throughput_") as folder:
        geometries = [
            bench_geometry(size, block, counts[size], args.repeats, threads, Path(folder))
            for size, block in GEOMETRIES
        ]
    meta = {**provenance(), "kernels": kernels_in_use()}
    payload = {
        **meta,
        "chunk_bytes": CHUNK_BYTES,
        "repeats": args.repeats,
        "geometries": geometries,
    }
    text = markdown(meta, geometries, args.repeats)
    print(text)
    write_json(args.out / "cipher_throughput.json", payload)
    write_text(args.out / "cipher_throughput.md", text)


if __name__ == "__main__":
    main()
