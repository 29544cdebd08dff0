"""Weight blobs open in this process: one copy of each however many models use it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from modelfleet.repository.weights import TensorRef, open_blob

MMAP_MIN_BYTES = 1 << 20


class BlobCache:
    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # loader threads open blobs concurrently

    def __contains__(self, digest: str) -> bool:
        return digest in self._arrays

    def open(self, path: Path, ref: TensorRef) -> np.ndarray:
        with self._lock:
            array = self._arrays.get(ref.blob)
            if array is None:
                mapped = open_blob(path, ref)
                array = mapped if ref.nbytes >= MMAP_MIN_BYTES else np.array(mapped)
                array.flags.writeable = False
                self._arrays[ref.blob] = array
            elif array.shape != tuple(ref.shape) or array.dtype != ref.dtype:
                array = array.view(ref.dtype).reshape(ref.shape)  # same bytes, another view of them
            return array

    def drop(self, digest: str) -> None:
        with self._lock:
            self._arrays.pop(digest, None)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())
