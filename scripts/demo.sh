#!/usr/bin/env bash
# The main job: run a container, checkpoint and restore it, then live-migrate
# it between two "hosts" (network namespaces joined by a veth pair, each with
# its own runtime --root and a `migrate receive` agent), and check that its
# state in memory and on disk came along.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=${MIGRATE_PREFIX:-/opt/migrate}
M="$PREFIX/venv/bin/migrate"
WORK=${DEMO_DIR:-/var/tmp/migrate-demo}
ID=demo-counter
ROOT_A=/run/migrate-demo-a
ROOT_B=/run/migrate-demo-b
HOST_A=migrate-demo-a
HOST_B=migrate-demo-b
ADDR_A=10.251.0.1
ADDR_B=10.251.0.2
PORT=7781
TOKEN=demo-$$-$RANDOM
AGENTS=()
HOLDERS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
on() { local host=$1; shift; nsenter --net="/run/netns/$host" "$@"; }
cleanup() {
    for pid in "${AGENTS[@]}" "${HOLDERS[@]}"; do kill "$pid" 2>/dev/null || true; done
    "$M" --root "$ROOT_A" delete --force "$ID" >/dev/null 2>&1 || true
    "$M" --root "$ROOT_B" delete --force "$ID" >/dev/null 2>&1 || true
    ip netns del "$HOST_A" 2>/dev/null || true
    ip netns del "$HOST_B" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

say "building a busybox bundle in $WORK (with a helper that holds 64 MiB in memory)"
rm -rf "$WORK"
MIGRATE="$M" scripts/make-bundle.sh "$WORK" >/dev/null
gcc -O2 -static -o "$WORK/rootfs/bin/ctrhelper" tests/integration/helpers/ctrhelper.c
"$PREFIX/venv/bin/python" - "$WORK/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
# In memory: the shell's counter and 64 MiB with a known checksum.
# On disk: every counter value appended to /tmp/log.
c["process"]["args"] = ["sh", "-c", "ctrhelper memhold 64 /tmp/mem & i=0; "
                        "while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.1; done"]
c["root"]["readonly"] = False
c["hostname"] = "demo"
json.dump(c, open(path, "w"), indent=2)
PY

check_state() {   # the counter never skipped or repeated; the buffer is intact
    "$PREFIX/venv/bin/python" - "$WORK/rootfs/tmp/log" "$WORK/rootfs/tmp/mem" <<'PY'
import sys
values = [int(x) for x in open(sys.argv[1]).read().split()]
assert values == list(range(1, len(values) + 1)), "a counter value was lost or repeated"
n, checksum, ok = open(sys.argv[2]).read().split()
assert ok == "1", "the memory buffer changed"
print(f"state intact: counter at {values[-1]}, no value lost or repeated; "
      f"64 MiB buffer checksum {checksum} verified {n} times")
PY
}

say "migrate run -d $ID (on the host itself)"
exec 3< <(sleep infinity)      # stdio: pipes, as an engine's shim would hold them
HOLDERS+=("$!")                # the sleep behind that pipe: cleanup ends it
"$M" --root "$ROOT_A" run -d --bundle "$WORK" "$ID" <&3 > >(cat >/dev/null) 2>&1
sleep 1
"$M" --root "$ROOT_A" list
"$M" --root "$ROOT_A" exec "$ID" sh -c 'echo "inside: hostname $(hostname), pid $$, counter $(tail -1 /tmp/log)"'

say "migrate checkpoint $ID, inspect, restore"
IMG="$WORK/checkpoint"
"$M" --root "$ROOT_A" checkpoint --image-path "$IMG" "$ID"
"$M" inspect "$IMG" | head -12
"$M" --root "$ROOT_A" restore -d --image-path "$IMG" --bundle "$WORK" "$ID" <&3 > >(cat >/dev/null) 2>&1
sleep 0.5
"$M" --root "$ROOT_A" list
check_state

say "two hosts: network namespaces $HOST_A ($ADDR_A) and $HOST_B ($ADDR_B)"
ip netns add "$HOST_A"
ip netns add "$HOST_B"
ip link add mig-demo-a netns "$HOST_A" type veth peer name mig-demo-b netns "$HOST_B"
ip -n "$HOST_A" addr add "$ADDR_A/24" dev mig-demo-a
ip -n "$HOST_B" addr add "$ADDR_B/24" dev mig-demo-b
for h in "$HOST_A" "$HOST_B"; do ip -n "$h" link set lo up; done
ip -n "$HOST_A" link set mig-demo-a up
ip -n "$HOST_B" link set mig-demo-b up
for pair in "$HOST_A $ADDR_A $ROOT_A" "$HOST_B $ADDR_B $ROOT_B"; do
    set -- $pair
    # nsenter itself, not the `on` function: a function in the background is
    # a subshell, and its pid is not the agent's (cleanup would miss it).
    nsenter --net="/run/netns/$1" "$M" --root "$3" receive --listen "$2:$PORT" \
        --token "$TOKEN" --work-dir "$WORK/incoming-$1" >"$WORK/agent-$1.log" 2>&1 &
    AGENTS+=("$!")
done
sleep 1

say "live migration $HOST_A -> $HOST_B (strategy picked from what CRIU supports here)"
on "$HOST_A" "$M" --root "$ROOT_A" migrate "$ID" --to "$ADDR_B:$PORT" --token "$TOKEN" \
    --report "$WORK/report-1.json"
"$M" --root "$ROOT_B" list
sleep 1
check_state

say "and back $HOST_B -> $HOST_A, stop-and-copy this time"
on "$HOST_B" "$M" --root "$ROOT_B" migrate "$ID" --to "$ADDR_A:$PORT" --token "$TOKEN" \
    --strategy stop-and-copy --report "$WORK/report-2.json"
"$M" --root "$ROOT_A" list
sleep 1
check_state

say "reports: $WORK/report-1.json, $WORK/report-2.json"
"$PREFIX/venv/bin/python" - "$WORK"/report-*.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    print(f"{r['strategy']:>14}: downtime {r['downtime_s'] * 1000:.0f} ms, "
          f"total {r['total_s'] * 1000:.0f} ms")
PY
say "demo finished"
