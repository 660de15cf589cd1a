"""Feeding training batches from the uint8 pixel cache (Keras ``PyDataset``, any backend).

Images are never re-decoded: batches are gathered from the memory-mapped
``pixels.npy``. Reading the next batch overlaps with computing the current one.

On the TensorFlow backend :func:`fit_input` hands Keras a ``tf.data`` pipeline over the
same batches instead of the ``PyDataset`` itself: Keras wraps a ``PyDataset`` in
``tf.data.Dataset.from_generator``, whose kernel sets glibc's ``M_TRIM_THRESHOLD`` for the
whole process ("Memory patch applied" in the log). That switches off glibc's adaptive mmap
threshold, so every large tensor buffer is a fresh ``mmap`` the kernel zero-fills and unmaps
again: measured ~157,000 page faults/s and 24 % of the CPU in the kernel while training
ResNet-101 at 64² on a 2-core EPYC, against ~800 faults/s and 7 % through ``tf.data``
(bench/RESULTS.md, "training throughput").
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from mura.errors import DataError


def training_indices(labels: np.ndarray, oversample_abnormal: bool) -> np.ndarray:
    """Row positions for one epoch; with oversampling every abnormal row appears twice.

    This is the seed's "model 2": abnormal images duplicated before augmentation
    (the random augmentation then makes the two copies differ) to raise recall.

    Args:
        labels: 0/1 labels of the training rows.
        oversample_abnormal: duplicate the abnormal rows.

    Returns:
        int64 positions into ``labels``, sorted.
    """
    positions = np.arange(len(labels), dtype=np.int64)
    if oversample_abnormal:
        positions = np.sort(np.concatenate([positions, positions[np.asarray(labels) == 1]]))
    return positions


def sample_weights(labels: np.ndarray, class_weights: dict[str, float]) -> np.ndarray:
    """Per-sample weights from ``{"0": w0, "1": w1}``.

    Raises:
        DataError: a label has no weight.
    """
    try:
        table = np.array([class_weights["0"], class_weights["1"]], dtype=np.float32)
    except KeyError as exc:
        raise DataError(f"class_weights.json has no weight for class {exc.args[0]}") from None
    return table[np.asarray(labels, dtype=np.int64)]


class CacheBatches(keras.utils.PyDataset):
    """Batches ``(pixels[..., None], label[, weight])`` from rows of the cache.

    Args:
        pixels: the (N, S, S) uint8 cache (a memmap is fine).
        rows: cache rows to serve (may repeat, for oversampling).
        labels: label of each entry of ``rows``.
        batch_size: images per batch.
        shuffle: reshuffle every epoch (seeded by ``seed`` and the epoch number).
        seed: shuffling seed.
        sample_weights: optional per-entry loss weights (from the class weights).
        workers: prefetching threads.
        drop_remainder: serve only full batches (training): a last, smaller batch
            would have a new shape and make the backend trace or compile the
            training step a second time (about 40 s for DenseNet-169 on a 2-core CPU).
            With ``shuffle`` the dropped rows differ every epoch. Ignored when
            there are fewer rows than one batch.
        max_batches: 0, or serve at most this many batches per epoch (with ``shuffle``, the first
            ones of each epoch's order: a new random subset every epoch).
    """

    def __init__(  # noqa: PLR0913 - the feed's options, each a keyword with a default
        self,
        pixels: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        sample_weights: np.ndarray | None = None,
        workers: int = 1,
        drop_remainder: bool = False,
        max_batches: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        if len(rows) == 0:
            raise DataError("no rows to feed")
        if len(rows) != len(labels):
            raise ValueError(f"rows ({len(rows)}) and labels ({len(labels)}) differ in length")
        self.pixels = pixels
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.sample_weights = None if sample_weights is None else np.asarray(sample_weights, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.drop_remainder = drop_remainder and len(self.rows) >= self.batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.max_batches = max_batches
        self.epoch = 0
        self.order = self._order(0)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.rows))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle order of ``epoch`` (so a resumed run sees the same order)."""
        self.epoch = epoch
        self.order = self._order(epoch)

    def __len__(self) -> int:
        count = len(self.rows) // self.batch_size if self.drop_remainder else -(-len(self.rows) // self.batch_size)
        return min(count, self.max_batches) if self.max_batches else count

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        pick = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rows = self.rows[pick]
        # Read rows in ascending order (sequential I/O on the memmap), then restore the shuffle.
        sort = np.argsort(rows, kind="stable")
        images = np.empty((len(rows), *self.pixels.shape[1:]), np.uint8)
        images[sort] = self.pixels[rows[sort]]
        batch: tuple[np.ndarray, ...] = (images[..., None], self.labels[pick])
        if self.sample_weights is not None:
            batch = (*batch, self.sample_weights[pick])
        return batch

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


def fit_input(batches: CacheBatches, prefetch: int = 2) -> Any:
    """What to give ``model.fit`` for ``batches``: a ``tf.data`` pipeline on TensorFlow, else the batches.

    The pipeline maps batch numbers to ``batches[i]`` through ``tf.numpy_function`` (no
    generator op, see the module docstring) on a private one-thread pool, and prefetches
    ``prefetch`` batches (gathering a batch from the memory-mapped cache takes milliseconds).
    The shuffle order is read when a batch is made, so :meth:`CacheBatches.set_epoch` (the
    trainer's ``EpochSetter`` callback) still chooses each epoch's order. Other backends take
    the ``PyDataset`` as it is.
    """
    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf  # the TensorFlow backend is loaded already

    first = batches[0]
    fixed = batches.drop_remainder or len(batches.rows) % batches.batch_size == 0
    dtypes = tuple(tf.as_dtype(a.dtype) for a in first)
    shapes = tuple((batches.batch_size if fixed else None, *a.shape[1:]) for a in first)

    def load(index: np.ndarray) -> tuple[np.ndarray, ...]:
        return batches[int(index)]

    def make(index: Any) -> tuple[Any, ...]:
        arrays = tf.numpy_function(load, [index], dtypes, stateful=True)
        for array, shape in zip(arrays, shapes, strict=True):
            array.set_shape(shape)
        return tuple(arrays)

    # tf.data's own thread pool and autotuner, as Keras sets them for a PyDataset: by default tf.data
    # runs its map on TensorFlow's inter-op pool, and a map step waiting for the Python lock holds
    # one of the pool's threads (of two on a 2-core CPU) while the training step needs it (measured
    # at 320²: one core busy, half the images/s).
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    dataset = tf.data.Dataset.range(len(batches)).map(make, num_parallel_calls=1, deterministic=True)
    return dataset.prefetch(prefetch).with_options(options)
