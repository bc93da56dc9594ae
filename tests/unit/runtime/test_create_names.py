"""What create derives without touching the system: the cgroup path of a
runtime root, the state's "created" timestamp."""

import calendar
import hashlib
import re
import time

from migrate.runtime.context import RuntimeContext
from migrate.runtime.lifecycle.create import cgroups_path, created_timestamp


def test_cgroups_path_of_a_root_uses_sha256_of_the_root():
    ctx = RuntimeContext(root="/tmp/x/root/")
    tag = hashlib.sha256(b"/tmp/x/root").hexdigest()[:8]
    assert cgroups_path(ctx, None, "web", False) == f"/migrate-{tag}/web"
    assert cgroups_path(RuntimeContext(root="/run/migrate"), None, "web", False) == "/migrate/web"
    assert cgroups_path(ctx, "/mine/web", "web", False) == "/mine/web"
    assert cgroups_path(ctx, None, "web", True) is None


def test_created_timestamp_is_rfc3339_utc():
    before = time.time()
    stamp = created_timestamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    parsed = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 1 <= parsed + int(stamp[20:26]) / 1e6 <= time.time() + 1
