"""Near-duplicate removal for frame sequences with perceptual hashes (imagehash).

A fixed camera recording at a high frame rate yields runs of almost identical frames. Each frame's
perceptual hash (DCT-based pHash by default) is compared with the hashes of the frames kept so far
within a look-back `window`; a frame whose Hamming distance to one of them is <= `threshold` bits
(of 64) is dropped as a near-duplicate of that frame. Exact duplicates have distance 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

HASHES = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "ahash": imagehash.average_hash,
    "whash": imagehash.whash,
}


def perceptual_hash(image: np.ndarray, method: str = "phash", size: int = 8) -> imagehash.ImageHash:
    if method not in HASHES:
        raise ValueError(f"unknown hash {method!r}; allowed: {', '.join(HASHES)}")
    return HASHES[method](Image.fromarray(image), hash_size=size)


@dataclass(frozen=True)
class Decision:
    index: int
    keep: bool
    duplicate_of: int | None  # index of the kept frame it matches
    distance: int | None


def near_duplicates(
    frames: Iterable[np.ndarray], threshold: int = 6, window: int = 25, method: str = "phash"
) -> list[Decision]:
    """Keep/drop decision per frame, in order (the first of a run of near-duplicates is kept)."""
    kept: deque[tuple[int, imagehash.ImageHash]] = deque(maxlen=max(1, window))
    out = []
    for i, frame in enumerate(frames):
        h = perceptual_hash(frame, method)
        best = min(((h - hk, j) for j, hk in kept), default=None)
        if best is not None and best[0] <= threshold:
            out.append(Decision(i, False, best[1], int(best[0])))
        else:
            kept.append((i, h))
            out.append(Decision(i, True, None, int(best[0]) if best else None))
    return out
