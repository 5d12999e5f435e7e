"""The public API: the names ``capkern`` and ``capkern.testing`` export are pinned (a
change to either list is a deliberate, reviewed change of this test), every exported
name resolves, and no module reaches into another package's private modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import capkern

PKG = Path(capkern.__file__).parent
SERVERS = "capkern.servers"

CAPKERN_API = [
    "BadgeError", "BootConfig", "CSpaceFull", "CallAborted", "CapInfo", "CapabilityError",
    "CapabilityRevoked", "CapkernError", "ConfigError", "Contract", "ContractViolation",
    "DomainInfo", "EmptySlot", "ExitStatus", "Fault", "Grant", "IPCError", "InsecureWarning",
    "InsufficientRights", "IntegrityFault", "InvalidSlot", "Kernel", "KernelShutdown", "Limits",
    "MalformedMessage", "MessageError", "MessageTooLarge", "NestingTooDeep", "NoSuchProcess",
    "Op", "OutOfMemory", "PageInError", "PageLost", "PagerUnavailable", "Process",
    "ProcessError", "Program", "ProtectionFault", "QueueFull", "Quota", "QuotaExceeded",
    "Received", "ReplyError", "ReplyRefused", "Rights", "RootCap", "SegmentationFault",
    "ServerCrashed", "ServerError", "SlotOccupied", "TooManyCaps", "UnencodableBody",
    "WrongObjectType", "boot",
]

TESTING_API = [
    "After", "AttachCaps", "AttackPager", "BitFlip", "Crash", "DiskBitFlip", "DiskReplay",
    "Drop", "Evidence", "ExhaustDisk", "Extend", "Flood", "ForgeCaps", "Garbage", "Hang",
    "HoardQuota", "InsecureRun", "Misdirect", "Only", "Oversized", "PrevBoot",
    "PrevIncarnation", "Refuse", "Replay", "ReplayDiscarded", "ReuseReply", "RevokeRace",
    "Slow", "Snoop", "Sometimes", "Swap", "Tamper", "Truncate", "Workload", "WrongLabel",
    "WrongRead", "Zeros", "assert_no_plaintext", "assert_no_wrong_reads", "attack_disk",
    "attack_pager", "build_attack_disk", "build_attack_pager", "disk_attacker",
    "expected_pages", "is_typed_fault", "make_tamper", "page_pattern_for", "run_workload",
    "tamper_spec",
]


@pytest.mark.parametrize(("module", "pinned"), [("capkern", CAPKERN_API),
                                                ("capkern.testing", TESTING_API)])
def test_public_names_are_pinned(module: str, pinned: list[str]) -> None:
    mod = importlib.import_module(module)
    exported = list(mod.__all__)
    assert len(set(exported)) == len(exported), "a name is exported twice"
    assert sorted(exported) == pinned
    for name in exported:
        assert getattr(mod, name) is not None, name
    star: dict[str, object] = {}
    exec(f"from {module} import *", star)  # what a user's star import gets
    assert sorted(k for k in star if k != "__builtins__") == pinned


@pytest.mark.parametrize("package", ["capkern.servers.pager", "capkern.servers.blockdev",
                                     "capkern.servers.crypt"])
def test_server_packages_export_names_that_resolve(package: str) -> None:
    mod = importlib.import_module(package)
    assert mod.__all__ and sorted(set(mod.__all__)) == sorted(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.{name}"


def _private_imports(path: Path, root: Path = PKG.parent) -> list[str]:
    """Private modules of a server package that ``path`` (under ``root``, the directory
    holding the ``capkern`` package) imports from outside that server package.

    capkern's other private modules are private to capkern as a whole (as trio's
    ``trio._core`` is to ``trio``: ``trio.testing`` uses it), so the root task may
    import ``capkern.mmu._vm`` and the testing kit ``capkern._wire``.  A server package
    (``capkern.servers.pager``, ``.blockdev``, ``.crypt``) is one domain's program, which
    may run in another process: anything else, the testing kit above all, uses it only
    through its package's public names, never ``capkern.servers.pager._policy``."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1])
    own = ".".join(package)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            mods = [mod, *(f"{mod}.{a.name}" for a in node.names)]
        for mod in mods:
            parts = mod.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    sealed = owner.startswith(f"{SERVERS}.")
                    if sealed and owner != own and not own.startswith(owner + "."):
                        found.append(f"{rel.as_posix()} -> {mod}")
                    break
    return found


def test_no_module_imports_another_packages_private_modules() -> None:
    files = sorted(PKG.rglob("*.py"))
    assert PKG / "testing" / "_attackers.py" in files
    bad = [hit for f in files for hit in _private_imports(f)]
    assert bad == []


def test_the_private_import_check_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "capkern" / "testing" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..servers.blockdev._backends import MemoryBackend\n"
                     "from ._own import helper\n"
                     "from .._wire import encode\n"  # capkern's own: allowed
                     "from ..mmu._vm import VM\n"  # capkern's own: allowed
                     "import capkern.servers.pager._policy\n")
    assert _private_imports(probe, tmp_path) == [
        "capkern/testing/probe -> capkern.servers.blockdev._backends",
        "capkern/testing/probe -> capkern.servers.blockdev._backends.MemoryBackend",
        "capkern/testing/probe -> capkern.servers.pager._policy",
    ]
