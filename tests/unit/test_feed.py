from __future__ import annotations

import numpy as np
import pytest

from mura.errors import DataError
from mura.modeling.feed import CacheBatches, sample_weights, training_indices


@pytest.mark.parametrize(
    "labels,oversample,expected",
    [([0, 1, 0, 1], False, [0, 1, 2, 3]), ([0, 1, 0, 1], True, [0, 1, 1, 2, 3, 3]), ([1], True, [0, 0])],
)
def test_training_indices(labels: list[int], oversample: bool, expected: list[int]) -> None:
    assert training_indices(np.array(labels), oversample).tolist() == expected


def test_sample_weights_wiring() -> None:
    assert sample_weights(np.array([0, 1, 1]), {"0": 0.4, "1": 0.6}).tolist() == pytest.approx([0.4, 0.6, 0.6])
    with pytest.raises(DataError, match="class 1"):
        sample_weights(np.array([1]), {"0": 1.0})


def test_batches_follow_rows_and_reshuffle_per_epoch() -> None:
    pixels = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    rows = np.array([9, 3, 3, 5, 0])
    labels = np.array([1, 0, 0, 1, 0])
    batches = CacheBatches(pixels, rows, labels, batch_size=2, shuffle=True, seed=4, sample_weights=labels + 1.0)
    assert len(batches) == 3

    def epoch() -> list[tuple[int, int, float]]:
        out = []
        for i in range(len(batches)):
            x, y, w = batches[i]
            assert x.shape[1:] == (2, 2, 1) and x.dtype == np.uint8
            out += [(int(a[0, 0, 0]), int(b), float(c)) for a, b, c in zip(x, y, w, strict=True)]
        return out

    first = epoch()
    assert sorted(first) == sorted((int(r), int(lab), lab + 1.0) for r, lab in zip(rows, labels, strict=True))
    batches.on_epoch_end()
    second = epoch()
    assert sorted(second) == sorted(first) and second != first
    batches.set_epoch(0)
    assert epoch() == first  # a resumed run sees the same order


def test_empty_rows() -> None:
    with pytest.raises(DataError):
        CacheBatches(np.zeros((1, 2, 2), np.uint8), np.array([], int), np.array([]), 2)


def test_drop_remainder_serves_only_full_batches() -> None:
    pixels = np.arange(7, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    batches = CacheBatches(pixels, np.arange(7), np.zeros(7), batch_size=3, shuffle=True, seed=1, drop_remainder=True)
    assert len(batches) == 2 and all(len(batches[i][0]) == 3 for i in range(2))
    seen = set()
    for epoch in range(6):  # reshuffled every epoch, so the dropped row changes
        batches.set_epoch(epoch)
        seen |= {int(x[0, 0, 0]) for i in range(len(batches)) for x in batches[i][0]}
    assert seen == set(range(7))
    small = CacheBatches(pixels[:2], np.arange(2), np.zeros(2), batch_size=3, drop_remainder=True)
    assert len(small) == 1 and len(small[0][0]) == 2  # fewer rows than a batch: keep them


def test_max_batches_caps_an_epoch_with_a_new_subset_each_epoch() -> None:
    pixels = np.arange(40, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    batches = CacheBatches(
        pixels, np.arange(40), np.zeros(40), batch_size=4, shuffle=True, seed=2, drop_remainder=True, max_batches=3
    )
    assert len(batches) == 3
    epochs = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        epochs.append({int(x[0, 0, 0]) for i in range(len(batches)) for x in batches[i][0]})
    assert all(len(seen) == 12 for seen in epochs) and epochs[0] != epochs[1]
    assert len(CacheBatches(pixels, np.arange(40), np.zeros(40), batch_size=4, max_batches=99)) == 10  # a cap above: all


def test_fit_input_serves_the_same_batches_in_each_epochs_order() -> None:
    """On TensorFlow the tf.data pipeline yields exactly ``batches[i]``, following ``set_epoch``."""
    import keras

    from mura.modeling.feed import fit_input

    assert keras.backend.backend() == "tensorflow"
    pixels = np.arange(9, dtype=np.uint8)[:, None, None] * np.ones((1, 3, 3), np.uint8)
    batches = CacheBatches(
        pixels, np.arange(9), np.arange(9) % 2, batch_size=4, shuffle=True, seed=3, sample_weights=np.ones(9), drop_remainder=True
    )
    data = fit_input(batches)
    assert data is not batches and data.element_spec[0].shape.as_list() == [4, 3, 3, 1]  # static: one trace
    for epoch in (0, 1, 0):
        batches.set_epoch(epoch)
        got = [tuple(np.asarray(a) for a in item) for item in data]
        want = [batches[i] for i in range(len(batches))]
        assert len(got) == len(want) == 2
        for g, w in zip(got, want, strict=True):
            assert all(np.array_equal(a, b) for a, b in zip(g, w, strict=True))
    last = CacheBatches(pixels, np.arange(9), np.zeros(9), batch_size=4)  # validation: a last, smaller batch
    sizes = [int(x.shape[0]) for x, _ in fit_input(last)]
    assert sizes == [4, 4, 1] and fit_input(last).element_spec[0].shape.as_list() == [None, 3, 3, 1]


def _fit_log(feed: str) -> str:
    """stderr of a tiny ``fit`` in a fresh process, fed the ``PyDataset`` itself or through :func:`fit_input`."""
    import os
    import subprocess
    import sys

    code = f"""
import numpy as np, keras
from mura.modeling.feed import CacheBatches, fit_input
b = CacheBatches(np.zeros((8, 4, 4), np.uint8), np.arange(8), np.zeros(8), batch_size=4)
m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
m.compile("sgd", "binary_crossentropy")
m.fit({"fit_input(b)" if feed == "tf.data" else "b"}, epochs=1, verbose=0)
print("fitted")
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True)
    assert "fitted" in out.stdout
    return out.stderr


@pytest.mark.slow  # trains in a subprocess to read TensorFlow's log
def test_training_feed_does_not_trip_tensorflows_malloc_patch() -> None:
    """Keras's PyDataset path makes TensorFlow fix glibc's trim threshold for the whole process
    (page faults on every large buffer, the kernel time of issue 17); the project's feed must not."""
    assert "Memory patch applied" in _fit_log("pydataset")  # the check sees the patch where it happens
    assert "Memory patch applied" not in _fit_log("tf.data")
