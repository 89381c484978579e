"""Evaluating trained runs: photo and LiDAR-anchored metrics, reports, the baseline-vs-refiner demo."""
