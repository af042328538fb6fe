"""Build step of the ferrocoll package: put libferrocoll.so inside it.

The library comes from FERROCOLL_LIBRARY (a path to a built libferrocoll.so) if set, else
from the ferrocoll checkout this package sits in, built with
`cargo build --profile $FERROCOLL_CARGO_PROFILE -p ferrocoll-ffi` (default: release).
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def find_or_build_library() -> Path:
    given = os.environ.get("FERROCOLL_LIBRARY")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"FERROCOLL_LIBRARY={given} is not a file")
        return path
    if not (REPO / "Cargo.toml").is_file() or not (REPO / "ffi").is_dir():
        raise SystemExit(
            "libferrocoll.so not found: set FERROCOLL_LIBRARY to a built library, "
            "or install from a ferrocoll checkout (pip install ./ffi/python)"
        )
    profile = os.environ.get("FERROCOLL_CARGO_PROFILE", "release")
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit("cargo not found: install Rust, or set FERROCOLL_LIBRARY")
    subprocess.run(
        [cargo, "build", "--profile", profile, "-p", "ferrocoll-ffi"], cwd=REPO, check=True
    )
    out = "debug" if profile == "dev" else profile
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / out / "libferrocoll.so"


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = find_or_build_library()
        dest = Path(self.build_lib) / "ferrocoll" / "libferrocoll.so"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: it is platform-specific."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
