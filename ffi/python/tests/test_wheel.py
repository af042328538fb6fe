"""The wheel, end to end (build_wheel.sh): `pip wheel` builds libferrocoll.so in release mode
into a manylinux wheel, which is installed into a fresh venv where 2 ranks all-reduce.

It runs cargo (a release build of the ffi crate: minutes the first time, reused after), so
it runs only with FERROCOLL_WHEEL_TEST=1. .ci/test.sh sets it, with FERROCOLL_WHEEL_LIBRARY
naming the library the suite already built, so that the suite checks the packaging without a
release build; `bash ffi/python/build_wheel.sh` is the release build."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "build_wheel.sh"


@pytest.mark.skipif(os.environ.get("FERROCOLL_WHEEL_TEST") != "1",
                    reason="builds the library in release mode: set FERROCOLL_WHEEL_TEST=1")
def test_wheel_builds_installs_and_runs(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    # Built from the checkout (not a FERROCOLL_LIBRARY given to the tests), unless
    # FERROCOLL_WHEEL_LIBRARY names a library to package: the suite passes the one it built
    # (debug), which checks the packaging without a second, release build of the crate.
    env.pop("FERROCOLL_LIBRARY", None)
    if os.environ.get("FERROCOLL_WHEEL_LIBRARY"):
        env["FERROCOLL_LIBRARY"] = os.environ["FERROCOLL_WHEEL_LIBRARY"]
    # auditwheel, where installed next to this Python, cross-checks the tag.
    auditwheel = Path(sys.executable).with_name("auditwheel")
    if "AUDITWHEEL" not in env and auditwheel.exists():
        env["AUDITWHEEL"] = str(auditwheel)
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "wheels")], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    print(r.stdout)
    (wheel,) = (tmp_path / "wheels").glob("ferrocoll-*.whl")
    assert "-py3-none-manylinux_" in wheel.name, wheel.name
    assert "2 ranks: all_reduce" in r.stdout and "wheel ok" in r.stdout, r.stdout
