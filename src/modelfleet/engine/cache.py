"""The response cache: answers of deterministic models kept by their exact inputs, LRU in bytes."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

Key = tuple[str, int, bytes]


class ResponseCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[Key, tuple[list[np.ndarray], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(model: str, version: int, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Key:
        digest = hashlib.blake2b(digest_size=20)
        for name in sorted(inputs):
            array = inputs[name]
            digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            if array.dtype.kind == "O":  # BYTES
                for item in array.ravel():
                    raw = item if isinstance(item, bytes) else str(item).encode()
                    digest.update(len(raw).to_bytes(4, "little") + raw)
            else:
                digest.update(np.ascontiguousarray(array).data)
        digest.update("\0".join(outputs).encode())
        return model, version, digest.digest()

    def get(self, key: Key) -> list[np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Key, arrays: list[np.ndarray]) -> None:
        stored = [np.array(a, copy=True) for a in arrays]  # never a view of a batch or of a request
        for a in stored:
            a.flags.writeable = False
        nbytes = sum(a.nbytes for a in stored) + 256
        if nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old[1]
        self._entries[key] = (stored, nbytes)
        self.used_bytes += nbytes
        while self.used_bytes > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self.used_bytes -= size

    def drop_model(self, model: str) -> None:
        """Forget a model's answers (it was reloaded or unloaded)."""
        for key in [k for k in self._entries if k[0] == model]:
            self.used_bytes -= self._entries.pop(key)[1]
