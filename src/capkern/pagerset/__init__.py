"""Pager sets (TRUSTED, sans-IO): how the kernel spreads one sealed page over N pagers.

* :mod:`.erasure` -- split a sealed blob into ``n`` shards, any ``m`` of which rebuild it
  (``zfec``'s Reed-Solomon), each shard with a keyed tag bound to the page's binding and
  the shard's index, so the kernel knows *which* shard a pager corrupted.
* :mod:`.placement` -- which pagers hold a page's mirrored copies or shards, and in which
  order to ask them, skipping quarantined ones.

Nothing here does I/O or talks to a pager: the fault path drives it.
"""

from ._erasure import ErasureCode, NotEnoughShards, Rebuilt
from ._placement import Placement, overhead_erasure, overhead_mirror

__all__ = ["ErasureCode", "NotEnoughShards", "Placement", "Rebuilt", "overhead_erasure",
           "overhead_mirror"]
