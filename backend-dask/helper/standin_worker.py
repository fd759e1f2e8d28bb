#!/usr/bin/env python3
"""Stand-in for the native worker, for the helper's self-test (test_helper.py).

Does what the native program does in dial-in mode, minus the work: dies with its parent
(PR_SET_PDEATHSIG, set by itself), dials ADPARALLELENGINE_DRIVER, sends one JSON line with its
name and the secret, then waits until the driver closes the connection and exits 0.
STANDIN_EXIT=N makes it exit N right after dialing in, with a line on stderr.
"""

import ctypes
import json
import os
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1


def main():
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.stderr.write("standin: prctl failed: errno %d\n" % ctypes.get_errno())
        return 70
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 71
    host, _, port = os.environ["ADPARALLELENGINE_DRIVER"].rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(None)
    hello = {
        "name": os.environ.get("ADPARALLELENGINE_WORKER_NAME"),
        "secret": os.environ.get("ADPARALLELENGINE_SECRET"),
        "pid": os.getpid(),
        "ppid": parent,
        "exe": os.path.realpath(__file__),
        "args": sys.argv[1:],
        "cwd": os.getcwd(),
    }
    sock.sendall((json.dumps(hello) + "\n").encode())
    code = int(os.environ.get("STANDIN_EXIT", "0"))
    if code:
        sys.stderr.write("standin: exiting with %d as told\n" % code)
        return code
    while sock.recv(4096):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
