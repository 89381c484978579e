"""``benchmarks/lidar_psnr_ceiling.py``: the LiDAR-anchored PSNR of real photos taken further along the drive."""

from __future__ import annotations

import sys

from benchmark_scripts import load_benchmark


def test_demo_frames_are_the_evaluation_sweep_frames():
    assert load_benchmark("lidar_psnr_ceiling").demo_frames(80)[:6] == [1, 5, 10, 14, 19, 23]


def test_a_photo_further_away_scores_lower(monkeypatch, capsys):
    script = load_benchmark("lidar_psnr_ceiling")
    frames = ["--frames", "46", "50", "55", "59"]  # the car is moving here (it stands still at first)
    monkeypatch.setattr(sys, "argv", ["lidar_psnr_ceiling.py", *frames, "--gaps", "1", "6", "--bins", "0.05", "1", "4"])
    script.main()
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.05-1 ") or line.startswith("| 1-4 ")]
    assert [r[1].strip() for r in rows] == ["0.05-1", "1-4"]
    pairs = [int(r[2]) for r in rows]
    moved = [float(r[3]) for r in rows]
    psnr = [float(r[5]) for r in rows]
    assert pairs == [4, 4]  # gap 1 of each frame is under a metre, gap 6 over
    assert 0.1 < moved[0] < 1.0 < moved[1] < 4.0  # metres between the two cameras
    assert int(rows[0][4]) > 1000  # points compared
    assert psnr[0] > psnr[1] + 0.5 and 20.0 < psnr[1] < 40.0
