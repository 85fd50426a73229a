"""MinHash signatures of shingle sets: datasketch's `affine32` scheme, computed in one numpy pass.

datasketch's own `MinHash.update_batch` hashes each value in Python and allocates per sketch; here the
permutations are datasketch's (taken from a `MinHash` built once), the input hashes are already 32-bit,
and a whole post is one (permutations x shingles) array operation. A test checks the values equal
datasketch's. Only the low 8 bits of each value are kept (b-bit MinHash, Li and König 2010): two
different minima agree there once in 256, which `similarity` corrects for; a quarter of the memory.
"""

from __future__ import annotations

import numpy as np
from datasketch import MinHash

_M1, _M2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_S16, _S13 = np.uint32(16), np.uint32(13)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer, as datasketch pre-mixes input hashes (uint32 in, uint32 out)."""
    # Array arithmetic wraps modulo 2**32 without a warning (only numpy scalars warn).
    h = h ^ (h >> _S16)
    h *= _M1
    h ^= h >> _S13
    h *= _M2
    return h ^ (h >> _S16)


class Hasher:
    """Signatures for one (num_perm, seed): every signature compared must come from the same one."""

    def __init__(self, num_perm: int = 64, seed: int = 1) -> None:
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        self.num_perm = num_perm
        self._a = np.ascontiguousarray(a, dtype=np.uint32)[:, None]
        self._b = np.ascontiguousarray(b, dtype=np.uint32)[:, None]

    def _permuted(self, shingles: np.ndarray) -> np.ndarray:
        """Each permutation of each shingle: (num_perm, len(shingles)) uint32."""
        phv = self._a * fmix32(shingles)
        phv += self._b
        return phv

    def full(self, shingles: np.ndarray) -> np.ndarray:
        """datasketch's 32-bit MinHash values of the set of `shingles` (uint32 input hashes)."""
        return self._permuted(shingles).min(axis=1)

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        """The kept signature: the low 8 bits of each MinHash value (uint8, num_perm of them)."""
        return self.full(shingles).astype(np.uint8)

    def signatures(self, shingles: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """`signature` of many sets at once: `shingles` end to end, `counts[i]` of them for set i, every
        count above 0. One row per set."""
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return np.minimum.reduceat(self._permuted(shingles), starts, axis=1).T.astype(np.uint8)


_CHANCE = 1 / 256  # two different minima share their low 8 bits


def similarity(sig: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of one signature with each row of `others`."""
    agree = (others == sig).mean(axis=1)
    return np.maximum(agree - _CHANCE, 0.0) / (1 - _CHANCE)


_SHIFTS = [np.uint32(8 * j) for j in range(3)]


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One key per band per signature: (n, bands) uint32 for (n, num_perm) uint8 signatures.

    A key is the band's number and its `rows` 8-bit values side by side: exact, so two posts share a
    key only when they share the whole band.
    """
    if rows > 3 or bands > 256:
        raise ValueError("a 32-bit band key holds at most 3 rows and 256 bands")
    v = sigs[:, : bands * rows].astype(np.uint32).reshape(len(sigs), bands, rows)
    key = np.arange(bands, dtype=np.uint32) << np.uint32(24)
    key = np.broadcast_to(key, (len(sigs), bands)).copy()
    for j in range(rows):
        key |= v[:, :, j] << _SHIFTS[rows - 1 - j]
    return key


def post_band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    """`band_keys` of one signature, as Python ints (for one row numpy costs more than it saves)."""
    v = sig[: bands * rows].tolist()
    keys = []
    for band in range(bands):
        key = 0
        for value in v[band * rows : (band + 1) * rows]:
            key = (key << 8) | value
        keys.append(band << 24 | key)
    return keys
