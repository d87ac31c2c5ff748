"""The demo's command line and the lines that say where to watch it (no demo run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchveil.demo import keep_up_lines, parse_args, prefect_ui_url, watch_lines


def test_keep_up_is_off_by_default_and_set_by_its_flag() -> None:
    assert parse_args([]).keep_up is False
    assert parse_args(["--keep-up"]).keep_up is True


def test_the_prefect_ui_is_the_servers_api_url_without_its_api_path() -> None:
    assert prefect_ui_url("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200"
    assert prefect_ui_url("https://prefect.example/api/") == "https://prefect.example"
    assert prefect_ui_url(None) is None and prefect_ui_url("") is None


def test_watch_lines_name_the_prefect_ui_and_the_ray_dashboard() -> None:
    flows, cluster = watch_lines("http://127.0.0.1:4200/api", Path("/h"), "127.0.0.1:8265", False)
    assert flows == "  flows: Prefect UI at http://127.0.0.1:4200"
    assert cluster == "  cluster: Ray dashboard at http://127.0.0.1:8265"


def test_watch_lines_without_a_server_or_a_dashboard_say_what_to_do() -> None:
    flows, cluster = watch_lines(None, Path("/demo/platform/prefect"), None, True)
    assert "PREFECT_HOME=/demo/platform/prefect prefect server start" in flows
    assert "make demo ARGS=--keep-up" in flows
    assert "not installed" in cluster and "ray[default]" in cluster
    _, cluster = watch_lines(None, Path("/h"), None, False)
    assert "ARGS=--keep-up" in cluster


def test_keep_up_lines_list_what_runs_and_how_to_stop_it() -> None:
    lines = keep_up_lines(["  queries: the endpoint at http://127.0.0.1:8765"])
    assert "  queries: the endpoint at http://127.0.0.1:8765" in lines
    assert lines[-1].startswith("Ctrl-C stops them all")


def test_the_cloners_queries_are_distinct_variants_of_its_own_images() -> None:
    from patchveil.demo_clone import variants

    owned = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    queries, sources = variants(owned, 500, seed=0)
    assert queries.shape == (500, 32, 32, 3) and queries.dtype == np.uint8
    assert len({query.tobytes() for query in queries}) == 500
    assert set(sources.tolist()) <= set(range(12))
    unshifted = [i for i, q in enumerate(queries) if (q == owned[sources[i]]).all()]
    assert unshifted  # the images themselves are among the variants
    with pytest.raises(ValueError, match="at most"):
        variants(owned, 12 * 50 + 1, seed=0)


def test_the_demo_uses_the_default_preset_or_says_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo encrypts and trains with the committed default preset (read, never typed)."""
    from patchveil.demo import FALLBACK_CIPHER, demo_cipher
    from tests.tune.test_presets import _preset, _write

    preset = _preset("private", "rf", default=True)
    preset["model"] = {
        "variant": "invariant",
        "params": {"invariance_group": "rf", "orbit_pool": "sorted"},
    }
    monkeypatch.setenv("PATCHVEIL_FRONTIER", str(_write(tmp_path / "f.json", "private", preset)))
    chosen = demo_cipher()
    assert (chosen.name, chosen.window, chosen.group, chosen.variant) == (
        "private",
        0,
        "rf",
        "invariant",
    )
    assert chosen.orbit_pool == "sorted" and chosen.position_window is None
    assert "attack SSIM 0.14" in chosen.measured
    monkeypatch.setenv(
        "PATCHVEIL_FRONTIER", str(_write(tmp_path / "g.json", None, _preset("fast", "none")))
    )
    assert demo_cipher() == FALLBACK_CIPHER
