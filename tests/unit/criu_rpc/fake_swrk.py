"""A stand-in for ``criu swrk <fd>`` that plays one scripted scenario.

Unit tests of the client's message loop run this instead of CRIU:
``fake_swrk.py SCENARIO RECORD swrk FD``. It speaks the same protobuf
messages; what it received goes to RECORD as length-prefixed criu_req bytes
(plus, for ``opts``, the paths its fds resolve to through /proc).
"""

import json
import os
import socket
import struct
import sys
import time

from pycriu import rpc_pb2 as rpc


def main(scenario, record, fd):
    sk = socket.socket(fileno=fd)
    out = open(record, "ab")

    def log(req):
        data = req.SerializeToString()
        out.write(struct.pack("I", len(data)) + data)
        out.flush()

    def recv():
        data = sk.recv(1 << 20)
        if not data:
            sys.exit(0)
        req = rpc.criu_req.FromString(data)
        log(req)
        return req

    def send(resp, fds=()):
        if fds:
            sk.sendmsg([resp.SerializeToString()],
                       [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))])
        else:
            sk.send(resp.SerializeToString())

    def send_raw(data):
        sk.send(data)

    def notify(name, pid=None, fds=()):
        resp = rpc.criu_resp(type=rpc.NOTIFY, success=True)
        resp.notify.script = name
        if pid is not None:
            resp.notify.pid = pid
        send(resp, fds)
        return recv()

    req = recv()
    if scenario == "opts":
        # Where do the fds point, seen from here as CRIU would (/proc/peer/fd)?
        peer = struct.unpack("3i", sk.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        seen = {}
        for name in ("images_dir_fd", "work_dir_fd", "status_fd"):
            if req.opts.HasField(name) and getattr(req.opts, name) >= 0:
                seen[name] = os.readlink(f"/proc/{peer}/fd/{getattr(req.opts, name)}")
        for inh in req.opts.inherit_fd:
            seen[f"inherit:{inh.fd}"] = os.path.exists(f"/proc/self/fd/{inh.fd}")
        with open(record + ".json", "w") as f:
            json.dump(seen, f)
        send(rpc.criu_resp(type=req.type, success=True))
    elif scenario == "notify":
        r, w = os.pipe()
        os.write(w, b"hello")
        os.close(w)
        notify("pre-dump")
        notify("network-lock")
        notify("orphan-pts-master", fds=(r,))
        os.close(r)
        answer = notify("post-dump")
        notify("network-unlock")
        ok = answer.notify_success
        resp = rpc.criu_resp(type=req.type, success=ok)
        if not ok:
            resp.cr_errmsg = "Error (criu/action-scripts.c:156): One of more action scripts failed"
        send(resp)
    elif scenario == "restore":
        for name in ("pre-restore", "setup-namespaces", "post-setup-namespaces",
                     "post-restore", "pre-resume", "post-resume"):
            notify(name, pid=4242 if name in ("setup-namespaces", "post-restore") else None)
        resp = rpc.criu_resp(type=req.type, success=True)
        resp.restore.pid = 4242
        send(resp)
    elif scenario == "fail":
        print("Error (criu/cr-service.c:1): something on stderr", file=sys.stderr, flush=True)
        resp = rpc.criu_resp(type=req.type, success=False, cr_errno=3)
        resp.cr_errmsg = "Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"
        send(resp)
    elif scenario == "garbage":
        # A criu_resp cut in the middle of its cr_errmsg.
        resp = rpc.criu_resp(type=req.type, success=False, cr_errmsg="Error (x.c:1): cut here")
        send_raw(resp.SerializeToString()[:-5])
        time.sleep(60)
    elif scenario == "newer":
        # A newer CRIU: fields and an enum value this client has no table
        # entry for, in the notifications and in the final answer.
        unknown = (bytes([0xA0, 0x06, 0x2A])            # field 100, varint 42
                   + bytes([0xAA, 0x06, 0x03]) + b"new"  # field 101, "new"
                   + bytes([0xAD, 0x06, 1, 2, 3, 4])     # field 101, fixed32 (not its wire type)
                   + bytes([0xB1, 0x06]) + bytes(8)      # field 102, fixed64
                   + bytes([0xBB, 0x06, 0x08, 0x01, 0xBC, 0x06]))  # group 103 {1: 1}
        for name in ("pre-restore", "setup-namespaces", "post-restore"):
            resp = rpc.criu_resp(type=rpc.NOTIFY, success=True)
            resp.notify.script = name
            resp.notify.pid = 4343
            inner = resp.notify.SerializeToString() + unknown
            head = rpc.criu_resp(type=rpc.NOTIFY, success=True).SerializeToString()
            send_raw(head + bytes([0x2A, len(inner)]) + inner + unknown)
            recv()
        resp = rpc.criu_resp(type=req.type, success=True)
        resp.restore.pid = 4343
        # Then a "type" of 99: an unknown criu_req_type value is skipped, the
        # earlier type stays.
        send_raw(unknown + resp.SerializeToString() + bytes([0x08, 99]) + unknown)
    elif scenario == "die":
        print("fake swrk: giving up", file=sys.stderr, flush=True)
        sys.exit(3)
    elif scenario == "die-unread":
        # Killed with the client's answer to a notification still unread:
        # the client's next receive gets ECONNRESET, not EOF.
        resp = rpc.criu_resp(type=rpc.NOTIFY, success=True)
        resp.notify.script = "post-restore"
        send(resp)
        time.sleep(0.3)
        os._exit(9)
    elif scenario == "silent":
        time.sleep(60)
    elif scenario == "linger":
        # Answers, then does not exit when the client hangs up.
        send(rpc.criu_resp(type=req.type, success=True))
        time.sleep(60)
    elif scenario == "looping":
        # Like a restore from a truncated pages image: log, never answer.
        peer = struct.unpack("3i", sk.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        work = os.readlink(f"/proc/{peer}/fd/{req.opts.work_dir_fd}")
        with open(os.path.join(work, req.opts.log_file), "a") as f:
            for _ in range(100000):
                f.write("(00.1) 1: Advanced iov 0 bytes\n" * 128)
                f.flush()
                time.sleep(0.001)
    elif scenario == "keep_open":
        # Like cr_service_work: answer keep_open requests and wait for more.
        while True:
            resp = rpc.criu_resp(type=req.type, success=True)
            if req.type == rpc.VERSION:
                resp.version.major_number, resp.version.minor_number = 4, 2
                resp.version.sublevel = 1
            elif req.type == rpc.FEATURE_CHECK:
                resp.features.mem_track = False
                resp.features.lazy_pages = True
                resp.features.pidfd_store = True
            elif req.type == rpc.PAGE_SERVER_CHLD:
                resp.ps.pid, resp.ps.port = 777, 12345
            elif req.type == rpc.WAIT_PID:
                resp.status = 3 << 8
            send(resp)
            if not req.keep_open and req.type != rpc.PRE_DUMP:
                return
            req = recv()
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[4]))
