#!/usr/bin/env bash
# Build cyconv's kernels with AddressSanitizer and UndefinedBehaviorSanitizer
# and run the kernel tests under them: any out-of-bounds access, use after
# free or undefined behaviour (misaligned loads, signed overflow, ...) in a
# kernel stops the run with a report.
#
#   tools/asan.sh [pytest arguments]      (default: the kernel tests)
#
# The build goes into a fresh virtual environment outside the source tree,
# from a copy of the sources, so that it never mixes with a normal build.
# CYCONV_ASAN_DIR=dir keeps that environment in dir (reused if present).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1

libasan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$libasan" ]; then
    echo "asan.sh: gcc has no libasan.so; install the compiler's sanitizer runtime" >&2
    exit 2
fi

work=${CYCONV_ASAN_DIR:-}
if [ -z "$work" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
if [ ! -x "$work/venv/bin/python" ]; then
    rm -rf "$work/src"
    mkdir -p "$work/src"
    (cd "$root" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -xf - -C "$work/src"
    python3 -m venv "$work/venv"
    # -fno-sanitize-recover: undefined behaviour aborts like a memory error
    # rather than printing and carrying on.
    CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g" \
    LDFLAGS="-fsanitize=address,undefined" \
        "$work/venv/bin/pip" install --no-cache-dir "$work/src[test]"
fi

if [ $# -eq 0 ]; then
    set -- test_conv.py test_conv_direct.py test_pool.py test_pad.py test_signal.py test_layers.py \
        test_bad_inputs.py test_batchnorm.py test_fuzz.py test_concurrency.py test_conv_pool.py \
        test_fusion.py test_conv_winograd.py test_conv_phases.py test_matmul.py test_optimizers.py
fi
tests=()
for arg in "$@"; do
    if [[ "$arg" == test_*.py* && ! -e "$work/src/tests/${arg%%::*}" ]]; then
        continue  # a suite this checkout does not have yet
    fi
    tests+=("$arg")
done

cd "$work/src/tests"
# CPython leaks by design at exit: leak checking off.  Huge allocations
# return NULL (numpy raises MemoryError) instead of aborting, as without
# the sanitizer.  halt_on_error: the first memory error fails the run.
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# First prove the sanitizer is live: a kernel handed an output one row and
# column too large reads past its input, which must be reported.
probe='import numpy as np
from cyconv._kernels import _correlate
_correlate.correlate2d_valid(np.zeros((3, 3)), np.ones((2, 2)), np.zeros((3, 3)), 1)'
if LD_PRELOAD="$libasan" "$work/venv/bin/python" -c "$probe" 2> "$work/probe.log" \
        || ! grep -q "AddressSanitizer: heap-buffer-overflow" "$work/probe.log"; then
    cat "$work/probe.log" >&2
    echo "asan.sh: the sanitizer missed a deliberate out-of-bounds read" >&2
    exit 1
fi
echo "asan.sh: a deliberate out-of-bounds read in a kernel was reported, as it must be"
LD_PRELOAD="$libasan" "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
    -W error::pytest.PytestUnraisableExceptionWarning "${tests[@]}"
echo "asan.sh: no memory error or undefined behaviour reported"
