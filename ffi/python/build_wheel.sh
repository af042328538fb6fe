#!/usr/bin/env bash
# Builds the ferrocoll wheel and checks it from the outside:
#   1. `pip wheel` of ffi/python: setup.py builds libferrocoll.so from the ffi crate in
#      release mode (`cargo build --release -p ferrocoll-ffi`, in the checkout's target
#      directory or CARGO_TARGET_DIR, so a build already there is reused) and puts it in the
#      package; the wheel is tagged py3-none-manylinux_2_<N>_<arch>, N the newest glibc
#      symbol version the library uses (setup.py reads it with objdump -T).
#   2. checks the wheel: its tag is manylinux and agrees with the library's glibc symbol
#      versions, it carries ferrocoll/libferrocoll.so and py.typed, its metadata has the
#      `torch` extra (which pip resolves to torch, when the building Python has torch); and,
#      when auditwheel is installed (or AUDITWHEEL names it), that auditwheel finds the same
#      tag;
#   3. installs it with pip into a fresh venv and runs tests/wheel_smoke.py there (isolated
#      mode: no source tree on sys.path): 2 ranks all-reduce through the installed package,
#      and `import ferrocoll.torch` without torch says to install the extra.
# Usage: ffi/python/build_wheel.sh [WHEEL_DIR]   (default: target/wheels)
# PYTHON: the Python that builds (needs pip, setuptools and numpy; its numpy is lent to the
# fresh venv, which has no network). Default: $FERROCOLL_VENV/bin/python, else python3.
# FERROCOLL_LIBRARY: package that library instead of building one (see setup.py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/wheels}
venv=${FERROCOLL_VENV:-$HOME/.cache/ferrocoll/venv}
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x "$venv/bin/python" ]; then py=$venv/bin/python; else py=python3; fi
fi
mkdir -p "$out"
rm -f "$out"/ferrocoll-*.whl

echo "== build (pip wheel)"
# No build isolation: the build uses this Python's setuptools (no download).
"$py" -m pip wheel -q --no-build-isolation --no-deps -w "$out" "$here"
wheels=("$out"/ferrocoll-*.whl)
[ ${#wheels[@]} = 1 ] || { echo "error: expected one wheel in $out, got: ${wheels[*]}" >&2; exit 1; }
wheel=${wheels[0]}
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== check the wheel"
"$py" - "$wheel" "$tmp/lib" <<'EOF'
import re, subprocess, sys, zipfile
from pathlib import Path

wheel, libdir = Path(sys.argv[1]), Path(sys.argv[2])
tag = wheel.name[:-len(".whl")].split("-")[-1]
m = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", tag)
assert m, f"{wheel.name}: platform tag {tag} is not a manylinux tag"
assert wheel.name.split("-")[-3:-1] == ["py3", "none"], f"{wheel.name}: expected py3-none"
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    for need in ("ferrocoll/__init__.py", "ferrocoll/torch.py", "ferrocoll/py.typed",
                 "ferrocoll/libferrocoll.so"):
        assert need in names, f"{wheel.name} lacks {need}: {names}"
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    wheel_meta = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    z.extract("ferrocoll/libferrocoll.so", libdir)
assert "Provides-Extra: torch" in meta, meta
assert re.search(r"^Requires-Dist: torch\s*;\s*extra\s*==\s*['\"]torch['\"]", meta, re.M), meta
assert "Root-Is-Purelib: false" in wheel_meta, wheel_meta
lib = libdir / "ferrocoll" / "libferrocoll.so"
syms = subprocess.run(["objdump", "-T", str(lib)], capture_output=True, text=True, check=True).stdout
glibc = max((int(a), int(b)) for a, b in re.findall(r"\bGLIBC_(\d+)\.(\d+)", syms))
assert (int(m[1]), int(m[2])) == max(glibc, (2, 17)), f"tag {tag}, library needs GLIBC_{glibc}"
print(f"tag {tag}: library's newest glibc symbol version is GLIBC_{glibc[0]}.{glibc[1]}; "
      f"{len(names)} files, extra 'torch' declared")
EOF

if "$py" -c "import importlib.metadata as m; m.version('torch')" 2>/dev/null; then
    # pip itself resolves the extra to torch (installed here: --dry-run, nothing downloaded).
    extra=$("$py" -m pip install --dry-run --no-index "$wheel[torch]" 2>&1) || true
    grep -q "Requirement already satisfied: torch in .*(from ferrocoll" <<<"$extra" \
        || { echo "$extra"; echo "error: pip does not resolve ferrocoll[torch] to torch" >&2; exit 1; }
    echo "pip install '$(basename "$wheel")[torch]' resolves torch"
fi

auditwheel=${AUDITWHEEL:-$(command -v auditwheel || true)}
if [ -n "$auditwheel" ]; then
    show=$("$auditwheel" show "$wheel")
    echo "$show"
    tag=$(basename "$wheel" .whl); tag=${tag##*-}
    # (auditwheel wraps its lines: compare with the whitespace collapsed)
    tr -s ' \n' '  ' <<<"$show" | grep -q "consistent with the following platform tag: \"$tag\"" \
        || { echo "error: auditwheel does not find $tag" >&2; exit 1; }
else
    echo "(auditwheel not installed: its cross-check is left out)"
fi

echo "== install into a fresh venv and run 2 ranks"
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --no-index --no-deps "$wheel"
# numpy (the one dependency) lent from the building Python, without network: a .pth in the
# fresh venv names a folder with numpy alone (not that Python's site-packages, which may
# hold a ferrocoll of its own). The fresh venv's site-packages comes first.
"$py" - "$tmp/deps" <<'EOF'
import os, sys
from pathlib import Path
import numpy
deps = Path(sys.argv[1]); deps.mkdir()
site = Path(numpy.__file__).resolve().parent.parent
for entry in site.iterdir():
    name = entry.name
    if name in ("numpy", "numpy.libs") or (name.startswith("numpy-") and name.endswith(".dist-info")):
        os.symlink(entry, deps / name)
EOF
purelib=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$tmp/deps" >"$purelib/_lent_numpy.pth"
(cd "$tmp" && env -u PYTHONPATH -u FERROCOLL_LIBRARY FERROCOLL_SOCKET_IFNAME=lo \
    "$tmp/venv/bin/python" -I "$here/tests/wheel_smoke.py" "$tmp/venv")
echo "wheel ok: $wheel"
