"""A SPECweb99-like static file set, generated at run time, and the request mix over it.

SPECweb99's static workload: the document root holds directories of 36 files each, in four
classes of nine files. Class ``c`` file ``i`` (i = 1..9) is ``i * 102.4 * 10**c`` bytes, so
sizes run from 102 B to 900 KiB (921,600 bytes), about 4.9 MiB per directory. Requests pick a
class (35 %, 50 %, 14 %, 1 %), a file within it (a fixed, skewed mix), and a directory (Zipf,
so a few directories are hot). Scale the number of directories so the set is several times the
server's page cache, and a fair share of requests go to disk, as in the Haboob paper.

    fs = generate(Path("/tmp/docroot"), total_bytes=200 * 2**20)
    pick = fs.sampler(seed=1)
    pick()   # "/dir00003/class1_4"
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CLASS_MIX", "FILE_MIX", "FileSet", "file_size", "generate"]

#: the share of requests for each of the four file classes
CLASS_MIX = (0.35, 0.50, 0.14, 0.01)
#: the share of a class's requests for its files 1..9 (SPECweb99's within-class mix)
FILE_MIX = (0.039, 0.059, 0.088, 0.177, 0.353, 0.118, 0.071, 0.050, 0.045)
_PER_DIRECTORY = sum(round(i * 102.4 * 10.0**c) for c in range(4) for i in range(1, 10))


def file_size(cls: int, i: int) -> int:
    """Bytes in class ``cls`` (0-3), file ``i`` (1-9)."""
    if not (0 <= cls <= 3 and 1 <= i <= 9):
        raise ValueError(f"no SPECweb99 file class{cls}_{i}")
    return round(i * 102.4 * 10.0**cls)


@dataclass(frozen=True)
class FileSet:
    """A generated file set.

    Attributes:
        root: the document root.
        directories: how many directories it holds.
        total_bytes: the bytes in all its files.
        files: every file's URL path (``/dirNNNNN/classC_I``) and size.
    """

    root: Path
    directories: int
    total_bytes: int
    files: dict[str, int] = field(repr=False)

    def sampler(self, seed: int | None = 0, zipf: float = 1.0) -> Callable[[], str]:
        """A function returning URL paths in the SPECweb99 mix (directories Zipf-distributed)."""
        rng = random.Random(seed)
        weights = [1 / (d + 1) ** zipf for d in range(self.directories)]
        directories = list(itertools.accumulate(weights))
        mix = [(c, i, CLASS_MIX[c] * FILE_MIX[i - 1]) for c in range(4) for i in range(1, 10)]
        files = list(itertools.accumulate(w for _, _, w in mix))
        names = [f"class{c}_{i}" for c, i, _ in mix]

        def pick() -> str:
            d = bisect.bisect(directories, rng.random() * directories[-1])
            f = bisect.bisect(files, rng.random() * files[-1])
            return f"/dir{min(d, self.directories - 1):05d}/{names[min(f, len(names) - 1)]}"

        return pick

    def expected_size(self) -> float:
        """The mean response size in the request mix, in bytes."""
        return sum(
            CLASS_MIX[c] * FILE_MIX[i - 1] * file_size(c, i) for c in range(4) for i in range(1, 10)
        )

    def digest(self, url_path: str) -> str:
        """The SHA-256 of a file's content, read from disk."""
        return hashlib.sha256((self.root / url_path.lstrip("/")).read_bytes()).hexdigest()


def generate(
    root: Path | str,
    *,
    total_bytes: int | None = None,
    directories: int | None = None,
    seed: int = 0,
) -> FileSet:
    """Write a file set under ``root`` (made if missing; existing files of the right size stay).

    Args:
        root: the document root.
        total_bytes: about how large the set should be (whole directories, at least one).
        directories: how many directories instead (give one of the two).
        seed: the seed of the files' pseudo-random content.

    Raises:
        ValueError: neither or both of ``total_bytes`` and ``directories``, or a bad value.
    """
    if (total_bytes is None) == (directories is None):
        raise ValueError("give exactly one of total_bytes and directories")
    if directories is None:
        assert total_bytes is not None
        if total_bytes <= 0:
            raise ValueError(f"total_bytes must be > 0, not {total_bytes!r}")
        directories = max(1, round(total_bytes / _PER_DIRECTORY))
    if directories < 1:
        raise ValueError(f"directories must be >= 1, not {directories!r}")
    root = Path(root)
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)  # content need not be unique, only not all zeros
    files: dict[str, int] = {}
    for d in range(directories):
        folder = root / f"dir{d:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for c in range(4):
            for i in range(1, 10):
                size = file_size(c, i)
                path = folder / f"class{c}_{i}"
                files[f"/dir{d:05d}/class{c}_{i}"] = size
                if path.exists() and path.stat().st_size == size:
                    continue
                start = (d * 36 + c * 9 + i) * 4099 % (len(block) - size)
                path.write_bytes(block[start : start + size])
    return FileSet(root, directories, sum(files.values()), files)
