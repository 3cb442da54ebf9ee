#!/usr/bin/env bash
# A long fuzzing session against the installed cyconv: random, often invalid
# calls of every public function (tests/test_fuzz.py), many more of them
# than CI runs.
#
#   tools/fuzz_long.sh [examples per function] [pytest arguments]
#
# Default 5000 examples per function.  The seed is printed first and can be
# given back as CYCONV_FUZZ_SEED to replay a session; should the interpreter
# crash, pytest's fault handler prints where.  PYTHON picks the interpreter
# (default: python3 on PATH, e.g. that of an activated virtual environment).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
examples=${1:-5000}
[ $# -gt 0 ] && shift
seed=${CYCONV_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "fuzz_long.sh: $examples examples per function, seed $seed"
cd "$root/tests"
start=$(date +%s)
CYCONV_FUZZ_EXAMPLES=$examples HYPOTHESIS_PROFILE=thorough "${PYTHON:-python3}" -m pytest -q \
    -p no:cacheprovider test_fuzz.py --hypothesis-seed="$seed" \
    --hypothesis-show-statistics "$@"
echo "fuzz_long.sh: passed in $(( $(date +%s) - start )) s"
