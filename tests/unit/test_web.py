"""The web UI's store of recent answers for heatmaps drawn on demand (mura.apps.web.HeatmapCache)."""

from __future__ import annotations

import numpy as np

from mura.apps.web import HeatmapCache


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _views(n: int, value: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    return [(np.full((4, 4), value + k, np.uint8), np.full((2, 2), value + k, np.uint8), None) for k in range(n)]


def test_views_come_back_by_token_and_index_with_their_drawn_overlay() -> None:
    cache = HeatmapCache(studies=4, ttl_s=60)
    token = cache.put(_views(2, value=10), probability=0.7)
    found = cache.get(token, 1)
    assert found is not None
    pixels, thumb, probability, drawn = found
    assert int(pixels[0, 0]) == 11 and int(thumb[0, 0]) == 11 and drawn is None and probability == 0.7
    boxes = {"high_sensitivity": [{"x0": 0.1, "y0": 0.1, "x1": 0.5, "y1": 0.6, "score": 0.9}]}
    cache.keep_drawn(token, 1, (b"png-bytes", boxes))
    again = cache.get(token, 1)
    assert again is not None and again[3] == (b"png-bytes", boxes)
    assert cache.get(token, 2) is None and cache.get(token, -1) is None and cache.get("other", 0) is None
    assert len(token) >= 20 and cache.put(_views(1)) != token


def test_the_oldest_answers_go_first_and_none_outlives_the_ttl() -> None:
    clock = _Clock()
    cache = HeatmapCache(studies=2, ttl_s=60, clock=clock)
    first, second = cache.put(_views(1)), cache.put(_views(1))
    third = cache.put(_views(1))
    assert cache.get(first, 0) is None and cache.get(second, 0) is not None and cache.get(third, 0) is not None
    clock.now += 61
    assert cache.get(second, 0) is None and cache.get(third, 0) is None
    cache.keep_drawn(third, 0, (b"late", {}))  # an answer already dropped: nothing kept
    assert cache.get(third, 0) is None


def test_the_views_kept_for_review_come_back_with_their_answer_only() -> None:
    cache = HeatmapCache(studies=4, ttl_s=60)
    case = np.full((8, 6), 7, np.uint8)
    token = cache.put([(np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), case), *_views(1)])
    cases = cache.cases(token)
    assert len(cases) == 2 and cases[0] is case and cases[1] is None
    assert cache.cases("unknown") == []
