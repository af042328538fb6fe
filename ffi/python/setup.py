"""Build step of the ferrocoll package: put libferrocoll.so inside it, and tag the wheel.

The library comes from FERROCOLL_LIBRARY (a path to a built libferrocoll.so) if set, else
from the ferrocoll checkout this package sits in, built with
`cargo build --profile $FERROCOLL_CARGO_PROFILE -p ferrocoll-ffi` (default: release; the
checkout's target directory, or CARGO_TARGET_DIR, so a build already there is reused). A
library built here is copied without its debug information (`strip --strip-debug`: its
symbols stay); one given by FERROCOLL_LIBRARY is copied as it is.

The wheel holds no Python extension (ctypes loads the library), so it is tagged
`py3-none-<platform>`. The platform tag is read from the library itself, as auditwheel does:
`manylinux_2_<N>_<arch>`, N the newest glibc symbol version it uses (`objdump -T`), when it
links only libraries that the manylinux policy (PEP 600) lets a wheel take from the system;
`linux_<arch>` (installable on this kind of machine only) otherwise, or when objdump is
missing.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 has it; before, the `wheel` package did
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LIBRARY = "libferrocoll.so"

# What a manylinux wheel may load from the system (PEP 600, auditwheel's policy list):
# glibc's libraries, the dynamic loader, libgcc_s and libstdc++.
MANYLINUX_SYSTEM_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libnsl.so.1",
    "libcrypt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "ld64.so.2",
    "ld-linux.so.2",
}


def find_or_build_library() -> "tuple[Path, bool]":
    """The library to package, and whether it was built here."""
    given = os.environ.get("FERROCOLL_LIBRARY")
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"FERROCOLL_LIBRARY={given} is not a file")
        return path, False
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
    return target / out / LIBRARY, True


def platform_tag(lib: Path) -> str:
    """The wheel platform tag the library `lib` honestly supports (see the module doc)."""
    arch = platform.machine()
    fallback = f"linux_{arch}"
    objdump = shutil.which("objdump")
    if objdump is None:
        print(f"warning: objdump not found: the wheel is tagged {fallback}", file=sys.stderr)
        return fallback
    dynsyms = subprocess.run(
        [objdump, "-T", str(lib)], check=True, capture_output=True, text=True
    ).stdout
    headers = subprocess.run(
        [objdump, "-p", str(lib)], check=True, capture_output=True, text=True
    ).stdout
    needed = set(re.findall(r"^\s*NEEDED\s+(\S+)", headers, re.M))
    foreign = sorted(needed - MANYLINUX_SYSTEM_LIBS)
    if foreign:
        print(
            f"warning: {lib} links {', '.join(foreign)}, which a manylinux wheel cannot take "
            f"from the system: the wheel is tagged {fallback}",
            file=sys.stderr,
        )
        return fallback
    versions = [(int(a), int(b)) for a, b in re.findall(r"\bGLIBC_(\d+)\.(\d+)", dynsyms)]
    major, minor = max(versions, default=(2, 17))
    # 2.17 is the oldest glibc of a manylinux tag that pip still installs (manylinux2014).
    major, minor = max((major, minor), (2, 17))
    return f"manylinux_{major}_{minor}_{arch}"


def strip_debug(path: Path) -> None:
    strip = shutil.which("strip")
    if strip is not None:
        subprocess.run([strip, "--strip-debug", str(path)], check=True)


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib, built_here = find_or_build_library()
        dest = Path(self.build_lib) / "ferrocoll" / LIBRARY
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest)
        if built_here:
            strip_debug(dest)


class BdistWheel(bdist_wheel):
    """`py3-none-<platform>`: any Python 3, no extension module, the library's platform."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        lib = Path(self.get_finalized_command("build_py").build_lib) / "ferrocoll" / LIBRARY
        return "py3", "none", platform_tag(lib)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: it is platform-specific."""

    def has_ext_modules(self):
        return True


setup(
    cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": BdistWheel},
    distclass=BinaryDistribution,
)
