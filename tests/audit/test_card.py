"""The audit card: rows merged per cipher setting, strongest attacks picked, gaps shown as gaps."""

from __future__ import annotations

import json
from pathlib import Path

from patchveil.audit.card import (
    Setting,
    accuracy_index,
    build_card,
    render_markdown,
    strongest_solver,
)


def _summary(mean: float) -> dict[str, float]:
    return {"mean": mean, "median": mean}


SOURCES = {
    "jigsaw": {
        "rows": [
            {
                "configuration": "CIFAR window 4",
                "cipher": "disposable",
                "params": {"group": "none", "window": 4},
                "block_size": 4,
                "image_size": 32,
                "ciphertext": {"direct": _summary(0.9), "ssim": _summary(0.9)},
                "greedy": {"direct": _summary(0.3), "ssim": _summary(0.4)},
                "strong": {"direct": _summary(0.8), "ssim": _summary(0.79), "psnr": _summary(20)},
            },
            {
                "configuration": "photographs",
                "cipher": "disposable",
                "params": {"group": "none", "window": 0},
                "block_size": 16,
                "image_size": 224,
                "strong": {"direct": _summary(0.87), "ssim": _summary(0.91)},
            },
            {
                "configuration": "CIFAR upsampled",
                "cipher": "disposable",
                "params": {"group": "none", "window": 0},
                "block_size": 16,
                "image_size": 224,
                "strong": {"direct": _summary(0.98), "ssim": _summary(1.0)},
            },
        ]
    },
    "linkage_and_keys": {
        "rows": [
            {
                "cipher": "disposable",
                "params": {"group": "none", "window": 4},
                "block_size": 4,
                "image_size": 32,
                "linkage": {"rank1": 1.0, "rank5": 1.0, "queries": 200},
            },
            {
                "cipher": "conventional",
                "params": {},
                "block_size": 4,
                "image_size": 32,
                "linkage": {"rank1": 1.0, "rank5": 1.0},
                "known_plaintext": {"key_fraction": 1.0, "images_exact": 1.0},
                "ciphertext_only": {"np_recovered": 1.0, "ssim": 0.95},
            },
        ]
    },
}


def test_rows_merge_per_setting_and_pick_the_strongest_attack(tmp_path: Path) -> None:
    table = {
        "epochs": 15,
        "block_size": 4,
        "rows": [
            {"name": "plain", "cipher": "plain", "params": {}, "own_key_accuracy": 0.52},
            {
                "name": "window 4",
                "cipher": "disposable",
                "params": {"group": "none", "window": 4},
                "own_key_accuracy": 0.515,
                "fresh_key_accuracy": 0.515,
            },
        ],
    }
    (tmp_path / "paper_table_15_epochs.json").write_text(json.dumps(table))
    rows = {
        row.setting.label(): row.to_json() for row in build_card(SOURCES, accuracy_index(tmp_path))
    }
    window = rows["disposable(group=none, window=4)"]
    # The raw ciphertext is not a solver; the strong solver beats the greedy one.
    assert window["jigsaw"]["solver"] == "strong" and window["jigsaw"]["direct"] == 0.8
    assert window["linkage"]["rank1"] == 1.0
    assert window["accuracy"]["own_key"] == 0.515 and window["accuracy"]["plain"] == 0.52
    assert window["strongest_reconstruction"] == {"attack": "jigsaw", "ssim": 0.79}
    # Two image sets of one setting: the stronger attack result stands.
    large = [r for r in rows.values() if r["image_size"] == 224]
    assert len(large) == 1 and large[0]["jigsaw"]["data"] == "CIFAR upsampled"
    conventional = rows["conventional"]
    assert conventional["known_plaintext"]["images_exact"] == 1.0
    # The in-block key's SSIM leaves block order scrambled: it is not a reconstruction.
    assert conventional["strongest_reconstruction"] is None
    assert conventional["accuracy"] is None


def test_frontier_trials_give_accuracy_where_no_paper_table_trained(tmp_path: Path) -> None:
    """A setting only the frontier trained shows its validation accuracy (a trial stopped
    early does not count); a paper-table row still wins where both exist."""

    def trial(group: str, own: float, stopped: bool = False) -> dict:
        config = {"cipher": "disposable", "group": group, "window": 0, "block_size": 4}
        config |= {"image_size": 32, "variant": "invariant", "epochs": 15}
        return {
            "label": group,
            "config": config,
            "own_key_accuracy": own,
            "fresh_key_accuracy": own,
            "plain_accuracy": 0.5,
            "stopped_early": stopped,
        }

    frontier = {"trials": [trial("px", 0.35), trial("np_px", 0.12, stopped=True)]}
    (tmp_path / "frontier.json").write_text(json.dumps(frontier))
    index = accuracy_index(tmp_path)
    (setting,) = index
    assert setting.params == (("group", "px"), ("window", 0))
    assert index[setting]["own_key"] == 0.35 and "validation" in index[setting]["source"]


def test_markdown_shows_gaps_as_gaps() -> None:
    card = {
        "command": "c",
        "commit": "x",
        "machine": "m",
        "date": "d",
        "sources": {"jigsaw": {}},
        "rows": [row.to_json() for row in build_card(SOURCES, {})],
    }
    text = render_markdown(card)
    line = next(line for line in text.splitlines() if line.startswith("| conventional"))
    assert "100.0%" in line and "– / –" not in line and line.count("–") >= 4
    assert "never a key-space size" in text


def test_defaults_are_filled_so_benches_match() -> None:
    explicit = Setting.of({"cipher": "disposable", "params": {"group": "np_cs", "window": 0}})
    assert Setting.of({"cipher": "disposable", "params": {}}) == explicit
    assert strongest_solver({"cipher": "plain"}) is None
