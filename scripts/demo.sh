#!/usr/bin/env bash
# The main job: run a container, show it, exec into it, delete it.
# (Grows into checkpoint/restore and live migration as those land.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=${MIGRATE_PREFIX:-/opt/migrate}
M="$PREFIX/venv/bin/migrate"
ROOT=/run/migrate-demo
WORK=${DEMO_DIR:-/var/tmp/migrate-demo}
ID=demo-counter

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() { "$M" --root "$ROOT" delete --force "$ID" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

say "building a busybox bundle in $WORK"
rm -rf "$WORK"
MIGRATE="$M" scripts/make-bundle.sh "$WORK" >/dev/null
"$PREFIX/venv/bin/python" - "$WORK/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"]
c["root"]["readonly"] = False
c["hostname"] = "demo"
json.dump(c, open(path, "w"), indent=2)
PY

say "migrate run -d $ID"
# stdio: pipes from a helper process (CRIU dumps pipes; a host file would be
# declared external too, but pipes are what engines use).
exec 3< <(sleep infinity)
"$M" --root "$ROOT" run -d --bundle "$WORK" "$ID" <&3 > >(cat >/dev/null) 2>&1
"$M" --root "$ROOT" list
say "migrate state $ID"
"$M" --root "$ROOT" state "$ID"
sleep 0.5
say "migrate exec $ID (inside the container)"
"$M" --root "$ROOT" exec "$ID" sh -c 'echo "hostname: $(hostname)  pid: $$  counter: $(cat /tmp/count)"; id'
say "migrate ps $ID"
"$M" --root "$ROOT" ps "$ID"
say "migrate pause / resume"
"$M" --root "$ROOT" pause "$ID"
"$M" --root "$ROOT" state "$ID" | grep '"status"'
"$M" --root "$ROOT" resume "$ID"
"$M" --root "$ROOT" state "$ID" | grep '"status"'
say "migrate checkpoint $ID (CRIU dump; the container is gone afterwards, as with runc)"
IMG="$WORK/checkpoint"
# The container's stdio are pipes held by this script (as an engine's conmon would).
"$M" --root "$ROOT" checkpoint --print-stats --image-path "$IMG" "$ID"
before=$(cat "$WORK/rootfs/tmp/count")
"$M" --root "$ROOT" list
say "migrate inspect $IMG"
"$M" inspect "$IMG"
sleep 0.5
after=$(cat "$WORK/rootfs/tmp/count")
echo "counter right after the checkpoint: $before, half a second later: $after (frozen in the images)"
say "migrate restore $ID"
"$M" --root "$ROOT" restore -d --image-path "$IMG" --bundle "$WORK" "$ID" </dev/null
"$M" --root "$ROOT" list
sleep 0.5
"$M" --root "$ROOT" exec "$ID" sh -c 'echo "restored; counter now $(cat /tmp/count), pid 1 is: $(cat /proc/1/cmdline | tr "\0" " ")"'
say "migrate delete --force $ID"
"$M" --root "$ROOT" delete --force "$ID"
"$M" --root "$ROOT" list
trap - EXIT
say "demo finished"
