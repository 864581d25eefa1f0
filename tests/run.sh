#!/usr/bin/env bash
# Sets up (packages + build) and runs every Check suite; ends with a line
# "N passed, N failed" counting Check's individual tests over all suites.
# Usage: tests/run.sh [BUILD_DIR [MESON_OPTIONS...]]
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
# OpenBLAS 0.3.21 misdetects this CPU family; the machines set this, and we
# keep whatever the environment says, defaulting to the same choice.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
.ci/setup "$@" || exit 1
meson test -C "$build" --print-errorlogs --num-processes 2
status=$?
/usr/bin/python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, re, sys
passed = failed = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    m = re.findall(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)", t.get("stdout", ""))
    if m:
        checks, fails, errs = map(int, m[-1])
        passed += checks - fails - errs
        failed += fails + errs
    elif t.get("result") != "OK":
        failed += 1          # a suite that crashed before Check's summary
    print(f"{t['name']:>12}: {t['result']}" + (f" ({m[-1][0]} checks)" if m else ""))
print(f"{passed} passed, {failed} failed")
PY
exit $status
