#!/usr/bin/env bash
# Runs the whole test suite (unit + integration) with the installed package,
# then the tests that need a kernel with soft-dirty (pre-copy, hybrid,
# pre-dump chains) inside a qemu guest that has one (scripts/vm/guest.sh).
# Needs root and scripts/install-deps.sh first (the README's test command
# does both).
#
# Extra arguments go to pytest: test paths run just those (no guest part);
# options alone (-k, -x ...) apply to the whole suite (no guest part either).
#
# Environment: MIGRATE_PREFIX (default /opt/migrate) is the install tested;
# MIGRATE_GUEST_TESTS=0 leaves the guest part out, MIGRATE_HOST_TESTS=0 the
# host suite; MIGRATE_IN_GUEST=1 is set
# by the guest part itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=${MIGRATE_PREFIX:-/opt/migrate}
PYTEST="$PREFIX/venv/bin/pytest"
[ -x "$PYTEST" ] || { echo "run-tests: $PYTEST missing: run scripts/install-deps.sh" >&2; exit 1; }

# The soft-dirty part: everything CRIU's pre-dump needs, run in the guest.
GUEST_TESTS=(
    tests/integration/test_precopy.py
    "tests/integration/test_migration.py::test_strategy[pre-copy]"
    "tests/integration/test_migration.py::test_strategy[hybrid]"
    tests/integration/test_checkpoint.py::test_pre_dump_needs_memory_tracking
    tests/integration/test_checkpoint.py::test_pre_dump_then_dump_with_parent_path
)
# The guest's whole budget in CI (boot included), and how much slower than
# the host its emulated CPU is, for the tests' waits.
GUEST_TIMEOUT=${MIGRATE_GUEST_TIMEOUT:-1500}
GUEST_TIME_SCALE=6

# Lazy-pages (post-copy) dumps need pipes bigger than the 1 MiB default and
# root here lacks CAP_SYS_RESOURCE to grow them past fs.pipe-max-size (see
# DESIGN.md). Raised for the tests, and said so.
cur=$(cat /proc/sys/fs/pipe-max-size 2>/dev/null || echo 0)
if [ "$cur" -lt 16777216 ] && sysctl -qw fs.pipe-max-size=16777216 2>/dev/null; then
    echo "run-tests: raised fs.pipe-max-size from $cur to 16777216 for lazy-pages tests"
fi

export MIGRATE_RUNTIME=${MIGRATE_RUNTIME:-$PREFIX/venv/bin/migrate}
export PATH="$PREFIX/venv/bin:$PATH"
# Paths among the arguments narrow the run to them (no guest part). The
# tests import the installed package (tests/ is on sys.path, not the
# repository root), so what is tested is what was installed.
for a in "$@"; do
    [ -e "${a%%::*}" ] && exec timeout --kill-after=30 1500 "$PYTEST" -p no:cacheprovider -q -rs "$@"
done

status=0
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# One closing line for both parts: "tests: N passed, N failed, N skipped".
total() {
    awk '/^=*.* in [0-9.]+s/ || /^[0-9]+ (passed|failed)/ {
            for (i = 1; i < NF; i++) {
                n = $i + 0; w = $(i + 1); gsub(/[,=]/, "", w)
                if (w == "passed") p += n; else if (w == "failed" || w ~ /^error/) f += n
                else if (w == "skipped") s += n
            }
         }
         END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$logs"/*.log
}
# The guest part: prints its output, leaves its status in $logs/guest.status.
run_guest() {
    local guest=0 started=$SECONDS why
    echo "run-tests: soft-dirty tests in a qemu guest (${GUEST_TESTS[*]})"
    if ! why=$(scripts/vm/guest.sh check); then
        echo "run-tests: SKIPPED soft-dirty tests: cannot boot the guest here: $why"
        echo 0 >"$logs/guest.status"
        return
    fi
    # In the guest a skip of these is a failure: they are there to run.
    MIGRATE_VM_TIMEOUT=$GUEST_TIMEOUT MIGRATE_VM_ENV="MIGRATE_RUNTIME MIGRATE_TEST_TIME_SCALE MIGRATE_TEST_NO_SKIP MIGRATE_IN_GUEST" \
        MIGRATE_TEST_TIME_SCALE=$GUEST_TIME_SCALE MIGRATE_TEST_NO_SKIP=1 MIGRATE_IN_GUEST=1 \
        scripts/vm/guest.sh run "scripts/run-tests.sh ${GUEST_TESTS[*]@Q} -o timeout=900 -v" \
        2>&1 &
    echo $! >"$logs/guest.pid"
    wait $! || guest=$?
    echo "run-tests: guest part took $((SECONDS - started))s"
    if [ "$guest" -eq 125 ]; then
        echo "run-tests: SKIPPED soft-dirty tests: the guest did not boot (see above)"
        guest=0
    fi
    echo "$guest" >"$logs/guest.status"
}

guest_wanted=0
[ $# -eq 0 ] && [ "${MIGRATE_GUEST_TESTS:-1}" = 1 ] && [ "${MIGRATE_IN_GUEST:-0}" = 0 ] && guest_wanted=1
# The guest is emulated (TCG): CPU-bound, one vCPU here, while the host
# suite mostly waits on processes. Side by side they take ~4 minutes less
# than one after the other (CI's budget is 10). MIGRATE_GUEST_PARALLEL=0
# runs them in turn, streaming the guest's output.
parallel=0
if [ "$guest_wanted" = 1 ] && [ "${MIGRATE_HOST_TESTS:-1}" = 1 ] && \
        [ "${MIGRATE_GUEST_PARALLEL:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    parallel=1
    echo "run-tests: the soft-dirty guest runs beside the host suite; its output follows it"
    MIGRATE_VM_SMP=${MIGRATE_VM_SMP:-1} run_guest >"$logs/guest.log" 2>&1 &
    guest_pid=$!
    # guest.sh stops its qemu when it is told to (TERM).
    trap 'kill "$(cat "$logs/guest.pid" 2>/dev/null)" "$guest_pid" 2>/dev/null; wait; rm -rf "$logs"' EXIT
fi
if [ "${MIGRATE_HOST_TESTS:-1}" = 1 ]; then
    timeout --kill-after=30 1500 "$PYTEST" -p no:cacheprovider -q -rs tests "$@" \
        2>&1 | tee "$logs/host.log" || status=$?
fi
if [ "$guest_wanted" = 0 ]; then
    [ -f "$logs/host.log" ] && total
    exit "$status"
fi
if [ "$parallel" = 1 ]; then
    wait "$guest_pid" || true
    trap 'rm -rf "$logs"' EXIT
    cat "$logs/guest.log"
else
    run_guest 2>&1 | tee "$logs/guest.log"
fi
guest=$(cat "$logs/guest.status" 2>/dev/null || echo 1)
[ "$guest" -ne 0 ] && status=$guest
total
exit "$status"
