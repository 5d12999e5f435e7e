"""The boot block: an error inside it comes out as itself, cancelling around it works, bad
boot options are typed configuration errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

import capkern

from .helpers import forever


async def test_an_error_in_the_boot_block_comes_out_as_itself() -> None:
    with pytest.raises(capkern.NoSuchProcess):
        async with capkern.boot(paging=False) as k:
            k.kill(12345)

    class Mine(Exception):
        pass

    cause = KeyError("why")
    with pytest.raises(Mine) as info:
        async with capkern.boot(paging=False) as k:
            k.spawn(forever)
            raise Mine("body") from cause
    assert info.value.__cause__ is cause


async def test_cancelling_around_the_boot_block_works() -> None:
    with trio.move_on_after(10) as scope:
        async with capkern.boot(paging=False) as k:
            pid = k.spawn(forever)
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert k.status(pid) is not None and k.status(pid).state == "killed"  # type: ignore[union-attr]


@pytest.mark.parametrize("options", [
    {"evict_batch": "8"}, {"swap_blocks": None}, {"ram_pages": True}, {"cspace_size": 0},
    {"cspace_size": "big"}, {"pager_deadline": math.nan}, {"pager_deadline": math.inf},
    {"crypt_deadline": -1}, {"blockdev_latency": -0.5}, {"blockdev": 5},
    {"limits": {"max_caps": 1}}, {"pager": "lru"}, {"blockdev_server": 3}, {"policy": 1},
])
async def test_bad_boot_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(capkern.ConfigError):
        async with capkern.boot(**options):
            pass
