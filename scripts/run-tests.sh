#!/usr/bin/env bash
# Runs the whole test suite (unit + integration) with the installed package.
# Needs root and scripts/install-deps.sh first (the README's test command
# does both). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=${MIGRATE_PREFIX:-/opt/migrate}
PYTEST="$PREFIX/venv/bin/pytest"
[ -x "$PYTEST" ] || { echo "run-tests: $PYTEST missing: run scripts/install-deps.sh" >&2; exit 1; }

# Lazy-pages (post-copy) dumps need pipes bigger than the 1 MiB default and
# root here lacks CAP_SYS_RESOURCE to grow them past fs.pipe-max-size (see
# DESIGN.md). Raised for the tests, and said so.
cur=$(cat /proc/sys/fs/pipe-max-size 2>/dev/null || echo 0)
if [ "$cur" -lt 16777216 ] && sysctl -qw fs.pipe-max-size=16777216 2>/dev/null; then
    echo "run-tests: raised fs.pipe-max-size from $cur to 16777216 for lazy-pages tests"
fi

export MIGRATE_RUNTIME=${MIGRATE_RUNTIME:-$PREFIX/venv/bin/migrate}
export PATH="$PREFIX/venv/bin:$PATH"
# Paths among the arguments narrow the run; without any, the whole of tests/.
paths=0
for a in "$@"; do [ -e "${a%%::*}" ] && paths=1; done
[ "$paths" -eq 1 ] || set -- tests "$@"
# The tests import the installed package (tests/ is on sys.path, not the
# repository root), so what is tested is what was installed.
exec timeout --kill-after=30 1500 "$PYTEST" -p no:cacheprovider -q -rs "$@"
