"""``benchmarks/fixer_test_pairs.py``: test-pair scores grouped by pair label and by camera."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_benchmark


def record(pair_id, before, after):
    return {"id": pair_id, "psnr_before": before, "psnr_after": after, "ssim_before": 0.5, "ssim_after": 0.6}


def test_ids_split_into_label_and_camera():
    script = load_benchmark("fixer_test_pairs")
    assert script.split_id("underfit-25_front_camera_00061") == ("underfit-25", "front_camera")
    assert script.split_id("d2/cross-camera_front_left_camera_00007") == ("d2/cross-camera", "front_left_camera")
    assert script.split_id("cycle-2m-i300_front_right_camera_00079") == ("cycle-2m-i300", "front_right_camera")
    assert script.split_id("not-a-pair") == ("?", "?")


def test_groups_average_their_own_pairs(tmp_path, capsys):
    script = load_benchmark("fixer_test_pairs")
    records = [
        record("underfit-25_front_camera_00060", 16.0, 22.0),
        record("underfit-25_front_left_camera_00061", 18.0, 20.0),
        record("cross-camera_front_left_camera_00062", 14.0, 13.0),
    ]
    by_label = script.group_scores(records, "label")
    assert list(by_label) == ["cross-camera", "underfit-25"]
    assert by_label["underfit-25"]["n"] == 2 and by_label["underfit-25"]["psnr_before"] == pytest.approx(17.0)
    assert by_label["underfit-25"]["psnr_delta"] == pytest.approx(4.0)
    assert by_label["cross-camera"]["psnr_delta"] == pytest.approx(-1.0)  # a kind it hurts shows as such
    by_camera = script.group_scores(records, "camera")
    assert by_camera["front_left_camera"]["n"] == 2 and by_camera["front_left_camera"]["psnr_after"] == pytest.approx(16.5)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"split": "test", "step": 5, "per_image": records}))
    assert script.main([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "| cross-camera | 1 | 14.00 | 13.00 | -1.00 |" in printed and "| front_camera | 1 |" in printed


def test_missing_or_empty_metrics_are_one_line_errors(tmp_path, capsys):
    script = load_benchmark("fixer_test_pairs")
    assert script.main([str(tmp_path / "none.json")]) == 1
    (tmp_path / "empty.json").write_text(json.dumps({"split": "test"}))
    assert script.main([str(tmp_path / "empty.json")]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "no per_image scores" in err
