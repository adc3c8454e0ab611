"""The ablation (examples/ablation.py) and its patch-size axis (examples/patch_training/sweep.py): equal voxels per
step across sizes, the share of empty (patch, class) pairs, the sweep's table and figure, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _patch_example import ablation, pt, tiny_config
from patch_training.runs import run_scores
from patch_training.sampling import class_absence  # examples/ is on sys.path (_patch_example)
from patch_training.sweep import constant_voxel_batches, paired_differences, plot_sweep, sweep_markdown


def test_constant_voxel_batches():
    assert constant_voxel_batches([64, 32, 16], 8, 2) == [8, 32, 128]
    assert constant_voxel_batches([128, 64, 32], 8, 2) == [8, 32, 128]
    assert constant_voxel_batches([32, 16], 2, 3) == [2, 16]
    for sizes in ([64, 48], [16, 32]):  # 8·64²/48² is not whole; a larger size would need a batch below 1
        with pytest.raises(pt.ExperimentError, match="whole batch"):
            constant_voxel_batches(sizes, 1 if sizes[0] == 16 else 8, 2)


def test_class_absence_counts_the_training_patches():
    # 5 items, class 1 fills item 0 only: one epoch of 5 patches draws each item once, so class 1 is absent from 4/5
    items: list[dict[str, np.ndarray]] = [
        {"image": np.zeros((1, 16, 16), np.float32), "label": np.zeros((1, 16, 16), np.uint8)} for _ in range(5)
    ]
    items[0]["label"][:] = 1
    items[1]["label"][0, :8] = 2  # half of item 1: an 8x8 patch has class 2 depending on where it is cut
    shares = class_absence(items, (8, 8), 5, num_classes=3, seed=0)
    assert shares[0] == pytest.approx(1 / 5) and shares[1] == pytest.approx(4 / 5)
    assert 4 / 5 <= shares[2] <= 1.0
    big = class_absence(items, (16, 16), 5, num_classes=3, seed=0)  # whole items: item 1 always contains class 2
    assert big[2] == pytest.approx(4 / 5)


@pytest.mark.slow
def test_patch_size_sweep_tiny(tmp_path, capsys):
    config = tiny_config(synthetic_size=(64, 64), batch_size=1, checkpoints=False)
    settings, sizes = ["mime_adaptive", "dice"], [32, 16]
    ablation.run_all(config, settings, budgets=[3], seeds=[0, 1], out=tmp_path, patch_sizes=sizes)
    assert "equal compute: 1024 voxels per step at every patch size (1 × 32^2, 4 × 16^2)" in capsys.readouterr().out
    for seed in (0, 1):
        for p, batch in ((32, 1), (16, 4)):
            res = json.loads((tmp_path / f"patch{p}" / f"steps3_seed{seed}" / "dice" / "results.json").read_text())
            assert res["config"]["patch_size"] == [p, p] and res["config"]["batch_size"] == batch
            assert res["config"]["seed"] == seed
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["sizes"]["32"]["voxels_per_step"] == sweep["sizes"]["16"]["voxels_per_step"] == 1024
    # smaller patches leave more (patch, class) pairs empty
    assert 0.0 <= sweep["sizes"]["32"]["empty_pairs"] <= sweep["sizes"]["16"]["empty_pairs"] <= 1.0
    assert len(sweep["sizes"]["16"]["class_absent"]) == 3
    runs = sweep["runs"]["3"]
    assert set(runs) == set(settings) and all(len(runs[s][p]) == 2 for s in settings for p in ("32", "16"))
    md = (tmp_path / "sweep.md").read_text()
    assert "| `mime_adaptive` |" in md and "32²" in md and "empty (patch, class) pairs %" in md
    assert "### 3 steps: mean DSC % where present" in md
    assert "nan" not in md.lower()
    png = (tmp_path / "sweep.png").read_bytes()
    assert len(png) > 10_000 and png[:8] == b"\x89PNG\r\n\x1a\n"
    # finished runs are skipped: a second call trains nothing and rewrites the same summary
    before = (tmp_path / "sweep.json").read_text()
    ablation.run_all(config, settings, budgets=[3], seeds=[0, 1], out=tmp_path, patch_sizes=sizes)
    assert "==" not in capsys.readouterr().out
    assert (tmp_path / "sweep.json").read_text() == before
    # the command line rebuilds the summary from the folders
    assert (
        ablation.main(
            ["--patch-sizes", "32,16", "--settings", "mime_adaptive,dice", "--steps", "3"]
            + ["--seeds", "0,1", "--out", str(tmp_path), "--summarize-only"]
        )
        == 0
    )
    assert (tmp_path / "sweep.json").read_text() == before


def test_sweep_default_settings_include_the_ce_compound():
    assert "mime_adaptive+ce" in ablation.SWEEP_SETTINGS
    pt.parse_loss_specs(list(ablation.SWEEP_SETTINGS))  # every name is known to the registry


@pytest.mark.parametrize("settings", [ablation.SWEEP_SETTINGS, ablation.DEFAULT_SETTINGS])
def test_comparisons_include_dice_ce_as_monai_and_as_nnunet_train_it(settings):
    assert "dice+ce" in settings and "dice+ce:include_background=false" in settings
    assert set(ablation.SWEEP_PAIRED) <= set(ablation.SWEEP_SETTINGS)


def _scores(dice: float, present: float | None) -> dict:
    return {
        "dice": dice,
        "dice_present": present,
        "class_dice": [dice],
        "class_dice_present": [present],
        "volume_ratio": [1.0],
        "hd95": 1.0,
    }


def test_paired_differences_match_seeds_and_skip_unpaired_ones(tmp_path):
    """Seeds 0-2 of A, seeds 0, 2, 3 of B: the differences are A − B of seeds 0 and 2 only, in the table with their
    mean ± standard deviation and range, and in the figure's extra panel."""
    a = [{"seed": s, **_scores(d, d)} for s, d in ((0, 0.80), (1, 0.90), (2, 0.70))]
    b = [{"seed": s, **_scores(d, None if s == 2 else d)} for s, d in ((0, 0.75), (2, 0.74), (3, 0.10))]
    collected = {
        "classes": ["c"],
        "patch_sizes": ["32", "16"],
        "sizes": {
            "32": {
                "batch_size": 1,
                "voxels_per_step": 1024,
                "spatial_dims": 2,
                "class_absent": [0.5],
                "empty_pairs": 0.5,
            }
        },
        "runs": {"3": {"A": {"32": a}, "B": {"32": b}}},
    }
    paired = paired_differences(collected, "A", "B")
    entry = paired["differences"]["3"]["32"]
    assert entry["seeds"] == [0, 2] and "16" not in paired["differences"]["3"]
    assert entry["dice"] == pytest.approx([0.05, -0.04])
    assert entry["dice_present"][0] == pytest.approx(0.05) and entry["dice_present"][1] is None
    md = sweep_markdown({**collected, "paired": paired})
    assert "paired difference `A` − `B`" in md
    assert "| 32² | 0, 2 | mean DSC % | +5.0, -4.0 | +0.5 ± 4.5 | -4.0 … +5.0 |" in md
    assert "| 32² | 0, 2 | mean DSC % where present | +5.0 | +5.0 ± 0.0 | +5.0 … +5.0 |" in md
    plot_sweep({**collected, "paired": paired}, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_fixed_patch_ablation_tiny(tmp_path):
    """Without a patch-size axis: one folder per (budget, seed, setting) and the ablation.* summary."""
    config = tiny_config(checkpoints=False)
    ablation.run_all(config, ["mime", "dice"], budgets=[3], seeds=[0], out=tmp_path)
    assert (tmp_path / "steps3_seed0" / "mime" / "results.json").exists()
    collected = json.loads((tmp_path / "ablation.json").read_text())
    assert set(collected["runs"]["3"]) == {"mime", "dice"} and collected["classes"] == ["blob", "ring", "rare"]
    assert "| `dice` | 1 |" in (tmp_path / "ablation.md").read_text()
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_that_is_not_whole_epochs_is_refused(tmp_path, capsys):
    """--steps 1200 with 250 steps per epoch would train 1,000 steps in a folder named steps1200: refused."""
    with pytest.raises(SystemExit) as exit_info:
        ablation.main(["--steps", "1200", "--out", str(tmp_path / "sweep")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--steps 1200" in err and "multiple of --steps-per-epoch (250)" in err
    assert not list(tmp_path.iterdir())  # refused before anything is written, the output folder included


def test_dice_where_present_averages_the_classes_over_the_cases_that_contain_them():
    """Two cases, two classes: class 0 present in both, class 1 (never predicted) only in the second. The paper's
    convention scores case 0's absent class 1 as 1; where present, class 1 scores 0 and class 0 the mean of both."""
    per_case = [{"dice": [0.8, 1.0], "gt_counts": [10, 0]}, {"dice": [0.6, 0.0], "gt_counts": [12, 3]}]
    per_class = {c: {"dice_mean": m, "hd95_mean": 1.0, "volume_ratio": 1.0} for c, m in (("a", 0.7), ("b", 0.5))}
    entry = {"per_class": per_class, "per_case": per_case, "mean": {"dice": 0.6, "hd95": 1.0}}
    scores = run_scores(entry)
    assert scores["class_dice_present"] == pytest.approx([0.7, 0.0])
    assert scores["dice_present"] == pytest.approx(0.35)
    # a class absent from every case has no score where present and does not enter the mean
    entry["per_case"] = [{"dice": [0.8, 1.0], "gt_counts": [10, 0]}]
    assert run_scores(entry)["class_dice_present"] == [0.8, None]
    assert run_scores(entry)["dice_present"] == pytest.approx(0.8)
