"""Haboob's page cache: least recently used, bounded in bytes, with a cap per item.

Pure and synchronous (no event loop, no lock): the stages that use it run on the event loop,
one handler at a time, so it is only ever touched from one thread.

    cache = PageCache(capacity=64 * 2**20, max_item=4 * 2**20)
    cache.put("/index.html", page, len(page.body))
    cache.get("/index.html")      # the page, now the most recently used; counted as a hit
    cache.stats()                 # hits, misses, evictions, bytes...
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["CacheStats", "PageCache"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a :class:`PageCache`'s figures.

    Attributes:
        capacity: the most bytes the cache holds.
        max_item: the largest item it takes, in bytes.
        bytes: bytes held now.
        items: items held now.
        hits: lookups that found their item.
        misses: lookups that did not.
        inserts: items stored (a replacement counts as one).
        evictions: items evicted to make room.
        evicted_bytes: bytes they held.
        too_large: items refused for being larger than ``max_item``.
    """

    capacity: int
    max_item: int
    bytes: int
    items: int
    hits: int
    misses: int
    inserts: int
    evictions: int
    evicted_bytes: int
    too_large: int

    @property
    def lookups(self) -> int:
        """Hits plus misses."""
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float:
        """The share of lookups that hit (0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def __str__(self) -> str:
        mib = 2**20
        return (
            f"page cache: {self.items} items, {self.bytes / mib:.1f} of {self.capacity / mib:.1f}"
            f" MiB (items up to {self.max_item / mib:.2f} MiB)\n"
            f"  lookups {self.lookups}: hits {self.hits} ({self.hit_ratio:.1%}),"
            f" misses {self.misses}\n"
            f"  inserts {self.inserts}, evictions {self.evictions}"
            f" ({self.evicted_bytes / mib:.1f} MiB), too large to cache {self.too_large}"
        )


class PageCache(Generic[V]):
    """A least-recently-used map from keys to values, bounded by the values' sizes in bytes.

    An item larger than ``max_item`` is never stored (:meth:`put` returns False), so one big
    file cannot evict the whole cache; the caller serves it without caching it.

    Args:
        capacity: the most bytes held, >= 0 (0: a cache that stores nothing).
        max_item: the largest item stored, in bytes (default: ``capacity // 8``, so a cache
            always holds several items).

    Raises:
        ValueError: a negative capacity or item cap, or an item cap above the capacity.
    """

    def __init__(self, capacity: int, max_item: int | None = None) -> None:
        if max_item is None:
            max_item = capacity // 8
        if capacity < 0 or max_item < 0:
            raise ValueError(f"capacity and max_item must be >= 0, not {capacity}, {max_item}")
        if max_item > capacity:
            raise ValueError(f"max_item ({max_item}) is larger than the capacity ({capacity})")
        self.capacity = capacity
        self.max_item = max_item
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._inserts = 0
        self._evictions = self._evicted_bytes = self._too_large = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def get(self, key: str) -> V | None:
        """The value for ``key`` (now the most recently used), or None; counts a hit or miss."""
        item = self._items.get(key)
        if item is None:
            self._misses += 1
            return None
        self._hits += 1
        self._items.move_to_end(key)
        return item[0]

    def peek(self, key: str) -> V | None:
        """The value for ``key``, or None, without counting or reordering anything."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def fits(self, size: int) -> bool:
        """Whether an item of ``size`` bytes would be stored."""
        return 0 <= size <= self.max_item and size <= self.capacity

    def put(self, key: str, value: V, size: int) -> bool:
        """Store ``value`` as the most recently used item, evicting the least recently used
        ones until it fits.

        Returns:
            True if stored; False if ``size`` is over ``max_item`` (counted in ``too_large``;
            an older value for ``key`` is dropped, as it is stale).

        Raises:
            ValueError: a negative size.
        """
        if size < 0:
            raise ValueError(f"size must be >= 0, not {size}")
        self.discard(key)
        if not self.fits(size):
            self._too_large += 1
            return False
        items = self._items
        while self._bytes + size > self.capacity:
            _, (_, old) = items.popitem(last=False)
            self._bytes -= old
            self._evictions += 1
            self._evicted_bytes += old
        items[key] = (value, size)
        self._bytes += size
        self._inserts += 1
        return True

    def discard(self, key: str) -> None:
        """Remove ``key`` if present (not counted as an eviction)."""
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    def clear(self) -> None:
        """Remove every item; the counters stay."""
        self._items.clear()
        self._bytes = 0

    def keys(self) -> list[str]:
        """The keys, least recently used first."""
        return list(self._items)

    def stats(self) -> CacheStats:
        """A snapshot of the figures."""
        return CacheStats(
            capacity=self.capacity,
            max_item=self.max_item,
            bytes=self._bytes,
            items=len(self._items),
            hits=self._hits,
            misses=self._misses,
            inserts=self._inserts,
            evictions=self._evictions,
            evicted_bytes=self._evicted_bytes,
            too_large=self._too_large,
        )

    def __repr__(self) -> str:
        return f"<PageCache {len(self._items)} items, {self._bytes}/{self.capacity} bytes>"
