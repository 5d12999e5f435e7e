"""NBD addresses in ``--blockdev``: parsed without I/O, malformed ones are ConfigErrors."""

from __future__ import annotations

import pytest

from capkern._config import BootConfig
from capkern._nbdaddr import DEFAULT_PORT, NBDAddress, is_nbd_spec, parse_nbd_spec
from capkern.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nbd://localhost", NBDAddress("", "localhost", DEFAULT_PORT)),
        ("nbd://127.0.0.1:10810/", NBDAddress("", "127.0.0.1", 10810)),
        ("nbd://h:1/disk0", NBDAddress("disk0", "h", 1)),
        ("nbd://h/a%20b/c", NBDAddress("a b/c", "h", DEFAULT_PORT)),
        ("nbd://[::1]:5000/x", NBDAddress("x", "::1", 5000)),
        ("nbd+unix:///?socket=/tmp/s", NBDAddress("", socket_path="/tmp/s")),
        ("nbd+unix:///swap?socket=/run/nbd.sock", NBDAddress("swap", socket_path="/run/nbd.sock")),
    ],
)
def test_parse(spec: str, expected: NBDAddress) -> None:
    assert is_nbd_spec(spec)
    got = parse_nbd_spec(spec)
    assert got == expected
    assert parse_nbd_spec(str(got)) == got  # the printed form reads back the same


@pytest.mark.parametrize(
    "spec",
    ["nbd://", "nbd://:10809", "nbd://h:0", "nbd://h:65536", "nbd://h:port", "nbd://u@h",
     "nbd://u:pw@h", "nbd://h/x#frag", "nbd://h/x?socket=/s", "nbd+unix:///x",
     "nbd+unix:///x?socket=", "nbd+unix://host/x?socket=/s", "nbd+unix:///x?socket=/a&socket=/b",
     "nbd+unix:///x?socket=/s&tls=on", "nbd://h/" + "x" * 4097, "nbd://h/a%00b"],
)
def test_malformed_addresses_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_nbd_spec(spec)
    with pytest.raises(ConfigError, match="NBD"):
        BootConfig(blockdev=spec).validate()


@pytest.mark.parametrize("spec", ["memory", "file:/x", "nbd:/h", "NBD://h", 3, None])
def test_not_nbd(spec: object) -> None:
    assert not is_nbd_spec(spec)
    with pytest.raises(ConfigError):
        parse_nbd_spec(spec)  # type: ignore[arg-type]


def test_boot_accepts_nbd_and_still_refuses_unknown_devices() -> None:
    BootConfig(blockdev="nbd://127.0.0.1:10809/swap").validate()
    BootConfig(blockdev="nbd+unix:///?socket=/tmp/nbd.sock").validate()
    with pytest.raises(ConfigError, match="nbd://"):
        BootConfig(blockdev="iscsi://h").validate()
