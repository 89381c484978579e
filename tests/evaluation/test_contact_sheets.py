"""The evaluation's contact sheets, built from evaluations without any rendering."""

import numpy as np
import pytest

from difix_refiner.core.contact_sheet import LabelledRow
from difix_refiner.evaluation.contact_sheets import (
    MIN_LABEL_MARGIN,
    build_contact_sheet,
    build_cross_camera_sheet,
)
from difix_refiner.evaluation.evaluate_run import RunEvaluation


def thumb(value, h=20, w=30):
    return np.full((h, w, 3), value, dtype=np.uint8)


def evaluation(label, frames=(1, 5), cross=None):
    rows = [LabelledRow(f"{label}\nrender, recorded path", {f: thumb(50) for f in frames}),
            LabelledRow(f"{label}\nrender, shifted +2 m", {frames[0]: thumb(100)})]  # fmt: skip
    return RunEvaluation(
        label=label, metrics={}, sheet_frames=list(frames), photo_row={f: thumb(200) for f in frames},
        rows=rows, cross_camera=cross or {},
    )  # fmt: skip


def test_contact_sheet_has_the_photo_row_then_each_runs_rows():
    one = build_contact_sheet([evaluation("a")])
    two = build_contact_sheet([evaluation("a"), evaluation("b")])
    pad = 4
    assert one.width == MIN_LABEL_MARGIN + 2 * (30 + pad) + pad  # labels column, then one column per frame
    assert two.width == one.width and two.height == one.height + 2 * (20 + pad)  # two more rows
    x, y = MIN_LABEL_MARGIN + pad + 30 + pad, one.height - pad - 20  # last row, second frame: no thumbnail
    assert one.getpixel((x + 5, y + 5)) == (200, 200, 200)  # a grey cell
    with pytest.raises(ValueError):
        build_contact_sheet([])


def test_cross_camera_sheet_only_with_cross_camera_views():
    assert build_cross_camera_sheet([evaluation("a"), evaluation("b")]) is None
    cells = {"front_left_camera": {"photo": {1: thumb(10)}, "render": {1: thumb(20)}}}
    runs = [evaluation("a", cross=cells), evaluation("b")]  # b has no render of that camera: its row is dropped
    sheet = build_cross_camera_sheet(runs)
    assert sheet is not None and sheet.height == 28 + 2 * (20 + 4) + 4  # header, photo and a's render
