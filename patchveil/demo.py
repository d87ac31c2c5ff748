"""`make demo`: the whole platform on one machine, with real CIFAR-10 images.

1. split the images among 4 tenants (each gets its own source folder);
2. onboard them with the Prefect flow: one Ray actor per tenant makes the tenant's own key in
   the tenant's own key store and writes only ciphertext into the shared Parquet dataset;
3. show what every cipher hides, and the key spaces;
4. train the shared ViT on the ciphertext with Ray Train (Prefect flow → TorchTrainer);
5. key independence: a tenant that never took part, with a key made after training, and a
   tenant that rotates its key, both use the model without any retraining;
6. the audit: what the strongest ciphertext-only jigsaw solver reassembles from the demo's
   ciphertexts, and how surely a gallery of known images names their sources;
7. the query endpoint (Ray Serve, Open Inference Protocol): a tenant encrypts test images
   locally and gets labels over HTTP; the operator reads each tenant's clone risk.
8. a cloner (a tenant with a few hundred images of its own) makes thousands of distinct
   queries, the operator's monitor flags it, and `patchveil clone-check` names the CNN it
   trained on the answers, against honest models trained on the same images' true labels.

Everything is written under `demo-output/` (PATCHVEIL_DEMO_DIR); PATCHVEIL_DEMO_EPOCHS sets the
training budget (default 3: minutes on 2 cores; the paper table is its own command). The demo
prints where to watch it (Prefect's UI, Ray's dashboard) and stops everything at the end;
`--keep-up` (`make demo ARGS=--keep-up`) serves Prefect's UI from a Prefect server during the demo
and leaves Ray, that server and the query endpoint running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from patchveil.config import PlatformConfig
    from patchveil.tenants.loaders import LabeledImages

TENANTS = ("hospital-a", "factory-b", "bank-c", "clinic-d")
NEW_TENANT = "lab-e"
BLOCK_SIZE = 4
CIPHER = "disposable"
LOCALHOST = "127.0.0.1"
PREFECT_UI_PORT = 4200  # Prefect's own default; another free port when it is taken
PREFECT_SERVER_TIMEOUT_S = 180
# The endpoint's clone policy at the demo's scale, in distinct images per tenant.
DEMO_NORMAL_VOLUME = 1_000
DEMO_CLONING_VOLUME = 3_000


@dataclass(frozen=True)
class DemoCipher:
    """What the demo's tenants encrypt with and how the platform trains on it: the default
    preset of the committed frontier (bench/results/frontier.json) where it has one."""

    name: str
    block_size: int
    window: int
    group: str
    variant: str
    invariance_group: str | None = None
    orbit_pool: str | None = None
    learning_rate: float = 1e-3
    block_cutmix: float = 0.5
    measured: str = ""

    @property
    def params(self) -> dict[str, object]:
        return {"group": self.group, "window": self.window}

    @property
    def position_window(self) -> int | None:
        return self.window if self.variant == "window_position" else None


#: Without a default preset: a fresh random block order per image inside each quadrant (4×4-block
#: windows), which the window_position ViT ignores exactly; the quadrant layout leaks, and the
#: audit stage shows the jigsaw solver reassembling it.
FALLBACK_CIPHER = DemoCipher(
    "built-in (no default preset)", BLOCK_SIZE, 4, "none", "window_position"
)


def demo_cipher() -> DemoCipher:
    """The committed default preset, else FALLBACK_CIPHER."""
    from patchveil.presets import TRAINING_FIELDS, load_presets, preset_training

    preset = load_presets().default
    if preset is None or preset.cipher != CIPHER or preset.image_size != 32:
        return FALLBACK_CIPHER
    training = preset_training(preset.name, dict.fromkeys(TRAINING_FIELDS))
    return DemoCipher(
        name=preset.name,
        block_size=preset.block_size,
        window=int(preset.params.get("window", 0)),
        group=str(preset.params.get("group", "none")),
        variant=str(training["variant"]),
        invariance_group=training["invariance_group"],
        orbit_pool=training["orbit_pool"],
        learning_rate=float(training["learning_rate"] or 1e-3),
        block_cutmix=float(training["block_cutmix"] or 0.0),
        measured=preset.summary(),
    )


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


# -- where to watch, and --keep-up -----------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m patchveil.demo", description="The whole platform on one machine."
    )
    parser.add_argument(
        "--keep-up",
        action="store_true",
        help="serve Prefect's UI from a Prefect server during the demo, and leave Ray, that "
        "server and the query endpoint running at the end until Ctrl-C (make demo ARGS=--keep-up)",
    )
    return parser.parse_args(argv)


def prefect_ui_url(api_url: str | None) -> str | None:
    """The UI of a Prefect server from its API URL (`http://host:4200/api` → `http://host:4200`)."""
    if not api_url:
        return None
    return api_url.rstrip("/").removesuffix("/api")


def watch_lines(
    prefect_api_url: str | None,
    prefect_home: Path,
    ray_dashboard_url: str | None,
    dashboard_missing: bool,
) -> list[str]:
    """Where to watch the demo: Prefect's UI (or how to get one) and Ray's dashboard."""
    ui = prefect_ui_url(prefect_api_url)
    if ui:
        flows = f"  flows: Prefect UI at {ui}"
    else:
        flows = (
            "  flows: Prefect runs an ephemeral API without a UI here; browse these runs "
            f"later with `PREFECT_HOME={prefect_home} prefect server start`, or run "
            "`make demo ARGS=--keep-up` for a UI during the demo"
        )
    if ray_dashboard_url:
        url = ray_dashboard_url if "://" in ray_dashboard_url else f"http://{ray_dashboard_url}"
        cluster = f"  cluster: Ray dashboard at {url}"
    elif dashboard_missing:
        cluster = "  cluster: Ray's dashboard is not installed (`pip install 'ray[default]'`)"
    else:
        cluster = (
            "  cluster: Ray's dashboard runs with `make demo ARGS=--keep-up` (its process "
            "logs reach the console otherwise)"
        )
    return [flows, cluster]


def keep_up_lines(running: Sequence[str]) -> list[str]:
    """What stays up after the demo, and how to stop it."""
    return [
        "\nstill running (--keep-up):",
        *running,
        "Ctrl-C stops them all (Ray, the Prefect server, the endpoint) and ends the demo",
    ]


def dashboard_missing() -> bool:
    """True when Ray's dashboard packages (`ray[default]`) are not installed."""
    from ray._private.utils import get_dashboard_dependency_error

    return get_dashboard_dependency_error() is not None


def ray_dashboard_url() -> str | None:
    import ray

    return ray._private.worker.get_dashboard_url() or None


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind((LOCALHOST, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def start_prefect_server(prefect_home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`prefect server start` on 127.0.0.1 with its state in `prefect_home`; its API URL once
    it answers. Call before Prefect is imported here: flows then report to it."""
    import httpx

    port = _free_port(PREFECT_UI_PORT)
    api_url = f"http://{LOCALHOST}:{port}/api"
    environment = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    command = [sys.executable, "-m", "prefect", "server", "start"]
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [*command, "--host", LOCALHOST, "--port", str(port)],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + PREFECT_SERVER_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return server, api_url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_process(server)
    sys.exit(f"demo: the Prefect server did not start in {PREFECT_SERVER_TIMEOUT_S} s; see {log}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def hold_until_interrupted(running: Sequence[str], stops: Sequence[Callable[[], None]]) -> None:
    """Print what stays up, wait for Ctrl-C, then stop each in turn."""
    print("\n".join(keep_up_lines(running)), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
    for stop in stops:
        stop()


def query_stage(
    config: PlatformConfig,
    model_name: str,
    tenant_id: str,
    key_store: Path,
    token: str,
    test: LabeledImages,
    port: int = 8765,
    keep_endpoint: bool = False,
    then: Callable[[str, str, np.ndarray], None] | None = None,
) -> str:
    """Stage 7: serve the model, let one tenant query encrypted test images, show the operator's
    risk view; `then(url, operator_token, answered_labels)` runs while the endpoint is up (the
    clone stage); the endpoint stops at the end unless `keep_endpoint`. Returns its URL."""
    import httpx

    from patchveil.serve.runtime import start_endpoint, stop_endpoint, wait_until_ready
    from patchveil.serve.secrets import operator_token_hash, reset_operator_token
    from patchveil.serve.settings import ServeSettings, serve_home
    from patchveil.tenants.client import Tenant
    from patchveil.tenants.query_client import QueryClient, query_images

    folder = serve_home(config)
    # A home that served before keeps only the token's hash: make a new one before the start,
    # since the gateway reads the hash when it starts.
    operator_token = reset_operator_token(folder) if operator_token_hash(folder) else None
    settings = ServeSettings(
        port=port,
        normal_volume=DEMO_NORMAL_VOLUME,
        cloning_volume=DEMO_CLONING_VOLUME,
        request_logs=False,
    )
    # Serve's own INFO lines (started, connecting, ready) stay in Ray's logs; the stage says
    # it. Serve sets its logger's level when it is first imported: after that.
    import ray.serve  # noqa: F401

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    endpoint = start_endpoint(config, model_name, settings=settings)
    operator_token = operator_token or endpoint.operator_token
    try:
        wait_until_ready(endpoint.url, timeout_s=180)
        print(
            f"  serving {endpoint.model_name} v{endpoint.model_version} at {endpoint.url}; clone "
            f"policy: intentional errors from {DEMO_NORMAL_VOLUME:,} distinct images per tenant, "
            f"full at {DEMO_CLONING_VOLUME:,} (the demo's scale: a tenant owns ~2,000 images)"
        )
        count = min(500, len(test))
        with QueryClient(endpoint.url, token) as client:
            answered = query_images(
                Tenant(tenant_id, key_store), client, test.images[:count], model=endpoint.model_name
            )
        print(
            f"  {tenant_id} sent {count} test images, each encrypted locally with a fresh "
            f"transform: {np.mean(answered.labels == test.labels[:count]):.1%} correct over HTTP "
            "(the platform saw only ciphertext, and learned every label)"
        )
        risk = httpx.get(
            f"{endpoint.url}/admin/risk",
            headers={"Authorization": f"Bearer {operator_token}"},
            timeout=30,
        ).json()
        for entry in risk.get("tenants", []):
            print(
                f"  operator's view: {entry['tenant_id']} {entry['queries']} images, clone risk "
                f"{entry['risk']:.2f}{' FLAGGED' if entry['flagged'] else ''}"
            )
        if then is not None:
            then(str(endpoint.url), operator_token, np.asarray(answered.labels))
    finally:
        if not keep_endpoint:
            stop_endpoint()
    return str(endpoint.url)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(os.environ.get("PATCHVEIL_DEMO_DIR", "demo-output")).resolve()
    epochs = int(os.environ.get("PATCHVEIL_DEMO_EPOCHS", "3"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # The platform's home (registry, datasets, checkpoints, Prefect state) for this demo.
    os.environ["PATCHVEIL_HOME"] = str(out / "platform")
    prefect_server = None
    if args.keep_up and not os.environ.get("PREFECT_API_URL"):
        from patchveil.config import PlatformConfig
        from patchveil.pipelines.prefect_home import use_platform_home_for_prefect

        use_platform_home_for_prefect(PlatformConfig.from_env())
        prefect_server, os.environ["PREFECT_API_URL"] = start_prefect_server(
            Path(os.environ["PREFECT_HOME"]), out / "prefect-server.log"
        )
        # Its own session keeps Ctrl-C from it: stopped here, also when the demo fails.
        atexit.register(stop_process, prefect_server)
    from patchveil.config import PlatformConfig
    from patchveil.pipelines.prefect_home import use_platform_home_for_prefect

    # Before Prefect is first imported (quiet_services imports it): its settings (home,
    # the ephemeral server's start-up time) are read once, at import.
    config = PlatformConfig.from_env()
    use_platform_home_for_prefect(config)
    from patchveil.console import QUIET_RAY_LOG_LEVEL, quiet_services

    log_file = quiet_services(out / "demo.log")

    from patchveil.tenants.loaders import default_cifar_dir, load_cifar
    from patchveil.tenants.split import split_among_tenants, write_tenant_sources

    stage("1. Data: real CIFAR-10 split among 4 tenants")
    folder = default_cifar_dir()
    if folder is None:
        sys.exit("demo: no CIFAR-10 data; set PATCHVEIL_CIFAR_DIR to a CIFAR-10 python folder")
    train, test = load_cifar(folder, "train"), load_cifar(folder, "test")
    parts = split_among_tenants(train, list(TENANTS), None, seed=0)
    sources = write_tenant_sources(parts, out / "sources", seed=0, source=str(folder))
    print(f"{len(train)} training and {len(test)} test images from {folder}")
    for tenant_id, part in parts.items():
        print(f"  {tenant_id:<11} {len(part):>5} images → {sources[tenant_id]}")

    chosen = demo_cipher()
    stage("2. Onboarding (Prefect flow → one Ray actor per tenant, each with its own key)")
    print(
        f"  cipher: {chosen.name}" + (f"\n  measured: {chosen.measured}" if chosen.measured else "")
    )
    from patchveil.pipelines.onboarding import onboard_tenants
    from patchveil.pipelines.ray_runtime import ensure_ray

    no_dashboard = dashboard_missing()
    ensure_ray(
        config,
        # Workers' output (Ray Data, Ray Train, warnings) goes to Ray's session logs; training
        # echoes its per-epoch lines itself.
        log_to_driver=False,
        log_level=QUIET_RAY_LOG_LEVEL,
        # Only when the user stays to watch.
        include_dashboard=args.keep_up and not no_dashboard,
    )
    watch = watch_lines(
        os.environ.get("PREFECT_API_URL"),
        Path(os.environ["PREFECT_HOME"]),
        ray_dashboard_url(),
        no_dashboard,
    )
    print("\n".join(watch))
    plan = {
        "defaults": {"cipher": CIPHER, "block_size": chosen.block_size, "params": chosen.params},
        "tenants": [
            {"tenant_id": tenant_id, "source": str(sources[tenant_id])} for tenant_id in TENANTS
        ],
    }
    plan_file = out / "onboarding.json"
    plan_file.write_text(json.dumps(plan, indent=2))
    onboarded = onboard_tenants(str(plan_file))
    for tenant in onboarded["tenants"]:
        print(
            f"  {tenant['tenant_id']:<11} key v{tenant['key_version']}, {tenant['rows']} encrypted "
            f"rows → {tenant['dataset']} v{tenant['dataset_version']} (API token issued, shown once)"
        )
    dataset = onboarded["tenants"][0]["dataset"]

    stage("3. What each cipher hides, and key spaces (a count of transforms, not a security claim)")
    from patchveil.tenants.ciphers import key_space_table
    from patchveil.tenants.imageio import write_png
    from patchveil.tenants.keys import CipherSpec
    from patchveil.tenants.preview import cipher_gallery, labelled_grid

    gallery, _ = cipher_gallery(test.images[:6], BLOCK_SIZE)
    write_png(out / "ciphers.png", gallery)
    print(f"  picture: {out / 'ciphers.png'}")
    for name, bits, summary in key_space_table(BLOCK_SIZE, train.image_size):
        print(f"  {name:<13}{bits:>7.0f} bits  {summary}")

    stage(f"4. Training the shared ViT on ciphertext only (Ray Train, {epochs} epochs)")
    from patchveil.pipelines.training import train_shared_model

    trained = train_shared_model(
        dataset_name=dataset,
        variant=chosen.variant,
        position_window=chosen.position_window,
        invariance_group=chosen.invariance_group,
        orbit_pool=chosen.orbit_pool,
        learning_rate=chosen.learning_rate,
        block_cutmix_prob=chosen.block_cutmix,
        size="cpu",
        epochs=epochs,
        num_workers=1,
        cpus_per_worker=2,  # two torch threads; Ray keeps logical CPUs for Ray Data
        echo_progress=True,
    )
    print(
        f"  model {trained['model_name']} v{trained['model_version']}, {trained['train_seconds']:.0f} s"
    )
    for tenant_id, accuracy in sorted(trained["tenant_accuracy"].items()):
        print(f"  {tenant_id:<11} validation accuracy (its own key): {accuracy:.1%}")

    stage("5. Key independence: no retraining for a new tenant or a rotated key")
    from patchveil.models.checkpoint import load_trained_model
    from patchveil.models.training import accuracy, pick_device
    from patchveil.pipelines.rotation import rotate_tenant_key
    from patchveil.tenants.client import Tenant

    model, _ = load_trained_model(trained["checkpoint_uri"])
    device = pick_device(False)

    def tenant_accuracy(tenant: Tenant) -> float:
        encrypted = tenant.encrypt(test.images)  # fresh nonces from the tenant's store
        return accuracy(model, encrypted.images, test.labels, device)

    newcomer = Tenant(NEW_TENANT, out / "tenants" / NEW_TENANT / "keys")
    newcomer.create_key(
        CipherSpec(CIPHER, chosen.block_size, test.image_size, tuple(chosen.params.items()))
    )
    print(
        f"  {NEW_TENANT} (key made after training) on the test images: {tenant_accuracy(newcomer):.1%}"
    )
    first = TENANTS[0]
    before = tenant_accuracy(Tenant(first, config.key_store_for(first)))
    rotated = rotate_tenant_key(first)
    after = tenant_accuracy(Tenant(first, config.key_store_for(first)))
    print(
        f"  {first} on the test images: key v{rotated['previous_key_version']} {before:.1%}, "
        f"after rotating to v{rotated['key_version']} {after:.1%} (same model)"
    )

    stage("6. What an attacker recovers from these ciphertexts (the audit's strongest attacks)")
    from patchveil.audit.jigsaw_mgc import reconstruct
    from patchveil.audit.linkage import invariant_of, link_images
    from patchveil.audit.scoring import score_reconstructions

    sample = test.images[:100]
    ciphertexts = newcomer.encrypt(sample).images
    group = chosen.group
    solved = reconstruct(ciphertexts, chosen.block_size, chosen.window, group)
    scores = score_reconstructions(sample, solved, chosen.block_size, group)
    write_png(
        out / "attack.png",
        labelled_grid(
            [list(row) for row in zip(sample[:6], ciphertexts[:6], solved[:6], strict=True)],
            ["plain", "ciphertext", "jigsaw (MGC)"],
        ),
    )
    print(
        f"  the strong jigsaw solver (MGC, one puzzle per public window) put "
        f"{scores.summary('direct').mean:.1%} of the blocks back (median "
        f"{scores.summary('direct').median:.1%}), {scores.summary('neighbour').mean:.1%} of "
        f"neighbours side by side, reconstruction SSIM {scores.summary('ssim').mean:.2f}; "
        f"picture: {out / 'attack.png'}"
    )
    gallery = np.concatenate([train.images[:1000], sample])
    invariant, window = invariant_of(CIPHER, chosen.params)
    linked = link_images(
        gallery, ciphertexts, 1000 + np.arange(len(sample)), chosen.block_size, invariant, window
    )
    reassembled = scores.summary("ssim").mean > 0.3
    print(
        f"  given {len(gallery)} known images, the platform names each ciphertext's source: "
        f"rank-1 {linked.rank1:.1%}. "
        + (
            "Block order hides how an image looks from a glance, not from a solver"
            if reassembled
            else "The solver did not reassemble these images"
        )
        + ", and no key-free cipher hides which known image a ciphertext is (README, threat "
        "model; bench/results/audit_card.md for every cipher)"
    )

    stage("7. Encrypted queries over HTTP (Ray Serve, Open Inference Protocol, clone defence on)")
    tokens = {tenant["tenant_id"]: tenant["api_token"] for tenant in onboarded["tenants"]}

    def clone_stage(url: str, operator_token: str, answered: np.ndarray) -> None:
        from patchveil.demo_clone import clone_stage as run_clone_stage
        from patchveil.tenants.keys import CipherSpec

        stage("8. A cloner extracts the model: the monitor's flag, the clone check's verdict")
        spec = CipherSpec(CIPHER, chosen.block_size, 32, tuple(sorted(chosen.params.items())))
        run_clone_stage(
            config,
            url,
            trained["model_name"],
            operator_token,
            spec,
            test.images,
            test.labels,
            answered,
            out,
        )

    endpoint_url = query_stage(
        config,
        trained["model_name"],
        first,
        config.key_store_for(first),
        tokens[first],
        test,
        keep_endpoint=args.keep_up,
        then=clone_stage,
    )

    print(
        f"\ndemo finished in {time.perf_counter() - started:.0f} s; outputs in {out}; "
        f"Prefect's logs in {log_file}"
    )
    if args.keep_up:
        import ray

        from patchveil.serve.runtime import stop_endpoint

        stops = [stop_endpoint, ray.shutdown]
        if prefect_server is not None:
            stops.append(lambda: stop_process(prefect_server))
        hold_until_interrupted([*watch, f"  queries: the endpoint at {endpoint_url}"], stops)


if __name__ == "__main__":
    main()
