"""A process to checkpoint: counts, holds memory, maybe talks on a tty.

    python -I -S counter.py FILE [--mem-mib N] [--interval S] [--tty]

Becomes a session leader (so the dumped tree owns its session), fills N MiB
with non-zero bytes (every page touched), then forever: increments a
counter, writes it at offset 0 of FILE (fixed width), and with ``--tty``
also prints it on stdin's terminal, which it takes as controlling tty.
A restored copy carries on from the value it had when dumped.
Stdlib only: it runs with -I -S.

Imported, ``Counter`` starts it as PID 1 of a new PID namespace (``unshare
--pid --fork``) and cleans up whatever copies of it exist.
"""

import fcntl
import os
import signal
import subprocess
import sys
import termios
import time


def main(argv):
    path = argv[0]
    mem_mib = int(argv[argv.index("--mem-mib") + 1]) if "--mem-mib" in argv else 0
    interval = float(argv[argv.index("--interval") + 1]) if "--interval" in argv else 0.02
    tty = "--tty" in argv
    if os.getsid(0) != os.getpid():
        os.setsid()
    if tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    memory = bytearray(mem_mib << 20)
    for offset in range(0, len(memory), 4096):
        memory[offset] = 1
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    count = 0
    while True:
        count += 1
        os.pwrite(fd, b"%012d\n" % count, 0)
        if tty:
            os.write(1, b"%d\n" % count)
        time.sleep(interval)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def is_alive(pid):
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Counter:
    """The counter as PID 1 of its own PID namespace.

    ``pid`` is its pid here. ``adopt(pid, child=...)`` records a restored
    copy; ``stop()`` SIGKILLs every copy and reaps what is ours.
    """

    def __init__(self, path, *, mem_mib=0, interval=0.02, tty_fd=None,
                 python=sys.executable, timeout=30.0):
        self.path = str(path)
        argv = ["unshare", "--pid", "--fork", python, "-I", "-S", os.path.abspath(__file__),
                self.path, "--mem-mib", str(mem_mib), "--interval", str(interval)]
        if tty_fd is not None:
            argv.append("--tty")
        stdio = tty_fd if tty_fd is not None else subprocess.DEVNULL
        self.launcher = subprocess.Popen(argv, stdin=stdio, stdout=stdio, stderr=stdio)
        self.pids = []
        self.children = []
        deadline = time.monotonic() + timeout
        try:
            while not (kids := _children(self.launcher.pid)):
                if self.launcher.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("counter did not start")
                time.sleep(0.005)
            self.pid = kids[0]
            self.pids.append(self.pid)
            self.wait_for(1, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def value(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read(13)
        except FileNotFoundError:
            return 0
        return int(data) if data.strip() else 0

    def wait_for(self, value, *, timeout=10.0):
        """Wait until the counter reaches ``value``; returns what it read."""
        deadline = time.monotonic() + timeout
        while (now := self.value()) < value:
            if time.monotonic() > deadline:
                raise TimeoutError(f"counter at {now}, expected {value} within {timeout} s")
            time.sleep(0.01)
        return now

    def adopt(self, pid, *, child):
        """Record a restored copy; ``child``: it is our child (rst_sibling)."""
        self.pid = pid
        self.pids.append(pid)
        if child:
            self.children.append(pid)

    def stop(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()
        if self.launcher.poll() is None:
            self.launcher.kill()
        self.launcher.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
