"""Boxes from heatmaps at two operating points, and localisation measured against true boxes (pure)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura.evaluation.localization import LOCALIZATION_METRICS, image_record, localization_summary, peak, pointing_hit
from mura.modeling.boxes import Box, boxes_from_heatmap, iou, study_boxes
from mura.runtime.served_config import ServingConfig


def _heat(size: int = 32) -> np.ndarray:
    """Two blobs: a strong one at rows 4-9, cols 20-27 (peak 0.9), a weaker one at rows 20-25, cols 2-7 (peak 0.6)."""
    heat = np.zeros((size, size))
    heat[4:10, 20:28] = 0.8
    heat[6, 23] = 0.9
    heat[20:26, 2:8] = 0.6
    heat[30, 30] = 0.7  # a one-pixel speck
    return heat


def test_boxes_are_the_regions_above_the_level_best_first() -> None:
    boxes = boxes_from_heatmap(_heat(), 0.5)
    assert boxes == [Box(20, 4, 28, 10, 0.9), Box(2, 20, 8, 26, 0.6)]  # the speck is below min_area
    assert boxes_from_heatmap(_heat(), 0.7) == [Box(20, 4, 28, 10, 0.9)]  # a higher level: fewer, tighter regions
    assert boxes_from_heatmap(_heat(), 0.95) == [] and boxes_from_heatmap(_heat(), 0.5, max_boxes=1) == boxes[:1]
    assert boxes_from_heatmap(_heat(), 0.5) == boxes  # deterministic


def test_a_box_scales_to_the_image_and_iou_is_symmetric() -> None:
    box = Box(20, 4, 28, 10, 0.9)
    assert box.scaled((32, 32), (320, 160)) == Box(100, 40, 140, 100, 0.9)
    assert box.contains(20, 4) and not box.contains(28, 10)
    assert iou(box, (20, 4, 28, 10)) == 1.0 and iou(box, (0, 0, 2, 2)) == 0.0
    assert iou(box, (24, 4, 32, 10)) == pytest.approx(iou((24, 4, 32, 10), box)) == pytest.approx(24 / 72)


def test_study_boxes_only_at_the_points_the_study_passes() -> None:
    thresholds = {"default": 0.5, "high_sensitivity": 0.3, "high_specificity": 0.8}
    levels = {"high_sensitivity": 0.5, "high_specificity": 0.7}
    between = study_boxes([_heat(), _heat()], 0.6, thresholds, levels)
    assert [len(v) for v in between["high_sensitivity"]] == [2, 2] and between["high_specificity"] == [[], []]
    above = study_boxes([_heat()], 0.85, thresholds, levels)
    assert above["high_specificity"] == [[Box(20, 4, 28, 10, 0.9)]]
    assert study_boxes([_heat()], 0.1, thresholds, levels) == {"high_sensitivity": [[]], "high_specificity": [[]]}


def test_the_peak_is_the_centre_of_an_upsampled_maps_plateau_not_its_corner() -> None:
    coarse = np.array([[1.0, 0.5], [0.2, 0.1]], np.float32)  # a 2 x 2 Grad-CAM, as at 64 px
    heat = np.asarray(Image.fromarray(coarse, mode="F").resize((64, 64), Image.Resampling.BILINEAR))
    assert np.unravel_index(int(np.argmax(heat)), heat.shape) == (0, 0)  # argmax: the plateau's corner
    assert peak(heat) == (7.5, 7.5)  # the 16 x 16 plateau's centre
    assert pointing_hit(heat, [(4, 4, 12, 12)]) and not pointing_hit(heat, [(20, 20, 40, 40)])
    single = np.zeros((8, 8), np.float32)
    single[5, 2] = 1.0
    assert peak(single) == (2.0, 5.0) and pointing_hit(single, [(2, 5, 3, 6)])


def test_pointing_and_the_image_record() -> None:
    heat = _heat()
    assert pointing_hit(heat, [(18, 2, 30, 12)]) and not pointing_hit(heat, [(0, 18, 10, 28)])
    predicted = boxes_from_heatmap(heat, 0.5)
    record = image_record(heat, [(20, 4, 28, 10)], predicted)
    assert record["pointing"] == 1.0 and record["matched_iou0.3"] == 1.0 and record["fp_iou0.3"] == 1.0  # the weak blob
    assert record["iou_sum"] == 1.0
    normal = image_record(heat, [], predicted)
    assert math.isnan(normal["pointing"]) and normal["fp_iou0.1"] == 2.0 and normal["truths"] == 0.0


def test_the_summary_has_every_metric_with_a_ci_per_body_part() -> None:
    from mura.evaluation.localization import reachable_peaks

    heat, predicted = _heat(), boxes_from_heatmap(_heat(), 0.5)
    peaks = reachable_peaks(heat.shape[0], 4)
    rows = []
    for k in range(12):
        truth = [(20, 4, 28, 10)] if k % 3 else [(0, 28, 4, 32)]  # every third image: the heatmap misses
        rows.append(
            {
                "patient_id": f"p{k}",
                "body_part": "XR_WRIST" if k < 6 else "XR_HAND",
                **image_record(heat, truth, predicted, peaks),
            }
        )
    summary = localization_summary(pd.DataFrame(rows), n_resamples=200).set_index("group")
    assert set(summary.index) == {"all", "XR_WRIST", "XR_HAND"}
    overall = summary.loc["all"]
    assert overall["pointing"] == pytest.approx(8 / 12) and overall["sensitivity_iou0.1"] == pytest.approx(8 / 12)
    assert overall["fp_per_image_iou0.1"] == pytest.approx((8 * 1 + 4 * 2) / 12)
    for name in LOCALIZATION_METRICS:
        assert overall[f"{name}_ci_low"] <= overall[name] <= overall[f"{name}_ci_high"], name


def _serving_config(**changes: Any) -> ServingConfig:
    """A one-variant model's serving config on 32² images, with box levels (``changes`` replace fields)."""
    config = ServingConfig(
        variants=("a",),
        variant_weights={"a": 1.0},
        thresholds={"default": 0.5, "high_sensitivity": 0.3, "high_specificity": 0.8},
        operating_point="default",
        image_size=32,
        resize="stretch",
        max_pixels=10**6,
        serve_batch_size=1,
        synthetic_data=True,
        box_levels={"high_sensitivity": 0.5, "high_specificity": 0.7},
    )
    return dataclasses.replace(config, **changes)


def test_a_served_answer_carries_each_views_boxes_in_its_own_pixels() -> None:
    from mura.runtime.predictor import ViewResult, view_boxes

    config = _serving_config()
    view = ViewResult("v1", 0.9, {"a": 0.9}, "png", np.zeros((320, 160), np.uint8), heatmaps={"ensemble": _heat()})
    found = view_boxes(config, 0.9, [view])
    assert found["high_specificity"] == [[Box(100, 40, 140, 100, 0.9)]]  # (20, 4, 28, 10) on 32² → the 160×320 view
    assert len(found["high_sensitivity"][0]) == 2
    assert view_boxes(config, 0.5, [view])["high_specificity"] == [[]]  # below the specific threshold: no solid box
    assert view_boxes(dataclasses.replace(config, box_levels={}), 0.9, [view]) == {}  # a model without levels: none
    assert view_boxes(config, 0.9, [dataclasses.replace(view, heatmaps={})]) == {}  # no heatmaps asked: none


def test_with_pad_a_views_heatmap_and_boxes_cover_the_image_not_the_black_bands() -> None:
    """resize: pad: the map of the padded square is cropped to the image before it is drawn or boxed."""
    import pandas as pd

    from mura.data.uploads import DecodedUpload
    from mura.runtime.predictor import study_result

    config = _serving_config(resize="pad", box_levels={"high_sensitivity": 0.5, "high_specificity": 0.5})
    square = np.zeros((32, 32), np.float32)
    square[16:24, 8:16] = 1.0  # the image (320 x 160) fills columns 8-24 of the square: a finding in its left half
    upload = DecodedUpload(pixels=np.zeros((32, 32), np.uint8), gray=np.zeros((320, 160), np.uint8), kind="png", body_part=None)
    frame = pd.DataFrame(
        {"probability": [0.9], "p_a": [0.9], "probability_raw": [0.9], "study_probability": [0.9], "study_probability_raw": [0.9]}
    )
    result = study_result(config, frame, [("v1", upload)], maps={"ensemble": square[None], "a": square[None]})
    assert result.views[0].heatmaps["ensemble"].shape == (32, 16)  # without the bands: a viewer stretches it over 160 x 320
    assert result.boxes["high_specificity"] == [[Box(0, 160, 80, 240, 1.0)]]  # stretched over the square, it would be x 40-80


def test_a_2x2_map_at_64_px_can_peak_only_near_the_corners_and_a_10x10_one_almost_anywhere() -> None:
    from mura.evaluation.localization import reachable_peaks

    assert sorted(reachable_peaks(64, 2)) == [(7.5, 7.5), (7.5, 55.5), (55.5, 7.5), (55.5, 55.5)]
    fine = reachable_peaks(320, 10)
    assert len(set(fine)) == 100 and (159.5, 159.5) not in fine  # cells centred 32 px apart, none on the very centre
    assert min(abs(x - 144) + abs(y - 176) for x, y in fine) <= 1.0  # interior cells peak on their centres (32k + 16)


def test_the_pointing_ceiling_counts_images_where_some_reachable_peak_is_in_a_true_box() -> None:
    from mura.evaluation.localization import reachable_peaks

    heat = _heat(64)
    centre, corner = [(24, 24, 40, 40)], [(0, 0, 12, 12)]  # a finding in the middle; one in the top-left corner
    coarse = reachable_peaks(64, 2)
    assert image_record(heat, centre, [], coarse)["pointing_ceiling"] == 0.0  # no 2 x 2 map can point there
    assert image_record(heat, corner, [], coarse)["pointing_ceiling"] == 1.0
    assert image_record(heat, centre, [], reachable_peaks(64, 4))["pointing_ceiling"] == 1.0  # a 4 x 4 one can
    assert math.isnan(image_record(heat, centre, [])["pointing_ceiling"])  # no grid given: not measured
    flat = np.zeros((64, 64), np.float32)  # nothing pushed the prediction up: the map points nowhere
    assert not pointing_hit(flat, centre) and image_record(flat, centre, [], coarse)["pointing"] == 0.0
    assert math.isnan(image_record(heat, [], [], coarse)["pointing_ceiling"])  # a normal image: nothing to point at
