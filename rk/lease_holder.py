"""Runs ON THE HOST as the remote command of a kernelspec launcher's ssh: `python -c SOURCE DIR LEASE_S`.

Standard library only, Python 3.7+, no rk import: its source is sent as the command. It reads
one byte a message from stdin, which the launcher writes into ssh:
  h  heartbeat: touch DIR/lease         i  SIGINT to the kernel (signal-mode interrupt)
  q  stop the kernel now (the front end shut the kernel down)
While the kernel lives it holds the lease. When stdin ends or falls silent for LEASE_S (the
launcher was killed, or the network is gone), it waits until the lease file is LEASE_S old, since
a reconnected launcher's new holder keeps touching it, then stops the kernel's process group.
When the kernel is gone it removes DIR (under the host's lock, if DIR is still that kernel's)
and exits 0, so the launcher, and the front end's KernelManager, see the kernel end.
"""

import fcntl
import json
import os
import select
import shutil
import signal
import sys
import time


def starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (IOError, OSError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def main(kernel_dir, lease_s):
    with open(os.path.join(kernel_dir, "state.json")) as f:
        record = json.load(f)
    pid, born = record["pid"], record["starttime"]
    lease = os.path.join(kernel_dir, "lease")

    def alive():
        return starttime(pid) == born

    def signal_group(sig):
        if alive():
            try:
                os.killpg(pid, sig)  # the kernel leads its own session and group
            except OSError:
                pass

    def stop_kernel():
        signal_group(signal.SIGTERM)
        deadline = time.time() + 10
        while alive() and time.time() < deadline:
            time.sleep(0.1)
        signal_group(signal.SIGKILL)

    def touch():
        try:
            os.utime(lease, None)
        except OSError:
            pass

    touch()
    heard = time.time()
    while alive():
        ready = select.select([0], [], [], 1.0)[0]
        if not ready:
            if time.time() - heard > lease_s:
                break
            continue
        data = os.read(0, 64)
        if not data:
            break
        heard = time.time()
        if b"h" in data:
            touch()
        if b"i" in data and alive():
            os.kill(pid, signal.SIGINT)
        if b"q" in data:
            stop_kernel()
    while alive():
        try:
            age = time.time() - os.stat(lease).st_mtime
        except OSError:
            return 0  # rk stopped the kernel and removed its directory
        if age > lease_s:
            stop_kernel()
        time.sleep(1)
    remove(kernel_dir, pid, born)
    return 0


def remove(kernel_dir, pid, born):
    """Remove the dead kernel's directory unless a new kernel of that name took it meanwhile."""
    try:
        lock = os.open(os.path.join(os.path.dirname(kernel_dir), ".lock"), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(kernel_dir, "state.json")) as f:
            record = json.load(f)
        if record.get("pid") == pid and record.get("starttime") == born:
            shutil.rmtree(kernel_dir, ignore_errors=True)
    except (IOError, OSError, ValueError):
        pass
    finally:
        os.close(lock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
