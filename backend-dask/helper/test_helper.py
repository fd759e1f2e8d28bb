#!/usr/bin/env python3
"""Self-test of adpe_dask.py on a real Dask cluster on loopback, without the Rust side.

Run with a python that has `distributed` (CI's venv):
    target/dask-venv/bin/python backend-dask/helper/test_helper.py [-v] [-k NAME] [--repeat N]

Each test starts its own `dask scheduler` and two `dask worker` processes (free ports, their
own process groups, all ended afterwards), a TCP listener standing in for the driver, and the
helper with standin_worker.py as the "native program". Prints one line per test with its
timings, then 'N passed, N failed'.
"""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "adpe_dask.py")
STANDIN = os.path.join(HERE, "standin_worker.py")
PY = sys.executable
VERBOSE = False
SECRET = "5ec7e7" * 10 + "abcd"  # 64 hex digits


def vlog(msg):
    if VERBOSE:
        sys.stderr.write("    %s\n" % msg)


def alive(pid):
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def wait_until(cond, timeout, step=0.02):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(step)
    return cond()


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            out.append(int(d))
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class Cluster:
    """A real scheduler and `workers` nanny+worker pairs on 127.0.0.1."""

    def __init__(self, workers=2, resources="ADPE=1"):
        self.dir = tempfile.mkdtemp(prefix="adpe-dask-test-")
        self.procs = []
        t0 = time.monotonic()
        sched_file = os.path.join(self.dir, "scheduler.json")
        self.scheduler = self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", sched_file],
        )
        if not wait_until(lambda: os.path.exists(sched_file) and os.path.getsize(sched_file) > 0, 30):
            self.close()
            raise RuntimeError("the scheduler did not start: %s" % self.log("scheduler"))
        time.sleep(0.05)
        with open(sched_file) as f:
            self.address = json.load(f)["address"]
        self.nannies = []
        for i in range(workers):
            args = ["worker", self.address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1"]
            args += ["--no-dashboard", "--memory-limit", "0", "--local-directory", os.path.join(self.dir, "w%d" % i)]
            if resources:
                args += ["--resources", resources]
            self.nannies.append(self._spawn("worker%d" % i, args))
        self.wait_workers(workers)
        self.start_time = time.monotonic() - t0

    def _spawn(self, name, args):
        logf = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen(
            [PY, "-m", "distributed.cli.dask_" + args[0]] + args[1:],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        self.procs.append(p)
        return p

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name + ".log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=10, set_as_default=False)

    def wait_workers(self, n, timeout=60):
        c = self.client()
        try:
            c.wait_for_workers(n, timeout=timeout)
        finally:
            c.close()

    def worker_pid(self, i):
        """The worker process (child of nanny i running spawn_main)."""
        for pid in children(self.nannies[i].pid):
            if "spawn_main" in cmdline(pid):
                return pid
        return None

    def scheduler_keys(self, prefix):
        c = self.client()
        try:
            return c.run_on_scheduler(lambda dask_scheduler: [k for k in dask_scheduler.tasks if str(k).startswith(prefix)])
        finally:
            c.close()

    def close(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Listener:
    """The driver's stand-in: accepts dial-ins, records each one's hello, keeps the
    connections open until told to close them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.hellos = queue.Queue()
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hello, args=(conn,), daemon=True).start()

    def _hello(self, conn):
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        try:
            hello = json.loads(buf.decode())
        except ValueError:
            conn.close()
            return
        hello["at"] = time.monotonic()
        hello["conn"] = conn
        with self.lock:
            self.conns.append(conn)
        self.hellos.put(hello)

    def next(self, timeout):
        try:
            return self.hellos.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no worker dialed in within %gs" % timeout)

    def close_all(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.close_all()
        self.sock.close()


class Helper:
    """adpe_dask.py as the driver runs it (`python -c SCRIPT`; `as_file`: `python adpe_dask.py`):
    config on stdin, JSON lines on stdout."""

    def __init__(self, cfg, python=None, extra_env=None, as_file=False):
        self.t0 = time.monotonic()
        env = dict(os.environ)
        env.update(extra_env or {})
        self.stderr = tempfile.TemporaryFile()
        if as_file:
            script = [HELPER]
        else:
            with open(HELPER) as f:
                script = ["-c", f.read()]
        self.proc = subprocess.Popen(
            ([python] if isinstance(python, str) else (python or [PY])) + script,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.events = queue.Queue()
        self.bad_lines = []
        threading.Thread(target=self._read, daemon=True).start()
        if cfg is not None:
            self.send(cfg if isinstance(cfg, str) else json.dumps(cfg))

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
                ev["at"] = time.monotonic()
                vlog("helper: %s" % line.decode().strip()[:300])
                self.events.put(ev)
            except ValueError:
                self.bad_lines.append(line)
        self.events.put({"event": "<eof>", "at": time.monotonic()})

    def send(self, line):
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def expect(self, kind, timeout, skip=("status",)):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r event within %gs; stderr:\n%s" % (kind, timeout, self.err()))
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev["event"] == kind:
                return ev
            if ev["event"] in skip:
                continue
            raise AssertionError("expected %r, got %r; stderr:\n%s" % (kind, ev, self.err()))

    def status(self, timeout=10):
        t0 = time.monotonic()
        self.send('{"cmd": "status"}')
        st = self.expect("status", timeout, skip=())
        st["took"] = st["at"] - t0
        return st

    def err(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-4000:]

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the helper did not exit within %gs" % timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        assert not self.bad_lines, "the helper wrote non-JSON lines to stdout: %r" % self.bad_lines


def config(cluster_address, listener, prefix, **over):
    cfg = {
        "scheduler": cluster_address,
        "workers": 2,
        "program": STANDIN,
        "args": ["--worker", "x y"],
        "upload": False,
        "shared_path": None,
        "env": {
            "ADPARALLELENGINE_DRIVER": listener.address if listener else "127.0.0.1:1",
            "ADPARALLELENGINE_SECRET": SECRET,
            "RUST_LOG": "info",
        },
        "name_prefix": prefix,
        "resources": {"ADPE": 1},
        "restrict": None,
        "connect_timeout": 10,
    }
    cfg.update(over)
    return cfg


TIMINGS = {}


def timing(name, value):
    TIMINGS.setdefault(name, []).append(value)
    vlog("%s = %.3f s" % (name, value))


# ---------------------------------------------------------------------------------------------


def with_cluster(fn):
    def run():
        cluster = Cluster(2)
        timing("cluster start (scheduler + 2 workers registered)", cluster.start_time)
        listener = Listener()
        try:
            fn(cluster, listener)
        except BaseException:
            sys.stderr.write("--- scheduler log:\n%s\n--- worker0 log:\n%s\n" % (cluster.log("scheduler"), cluster.log("worker0")))
            raise
        finally:
            listener.close()
            cluster.close()

    run.__name__ = fn.__name__
    return run


def dial_in_both(h, listener, prefix):
    started = h.expect("started", 30)
    assert started["tasks"] == ["%s-0" % prefix, "%s-1" % prefix], started
    assert started["dask_version"], started
    hellos = [listener.next(30), listener.next(30)]
    timing("started -> both tasks dialed in", max(x["at"] for x in hellos) - started["at"])
    timing("helper start -> first dial-in", min(x["at"] for x in hellos) - h.t0)
    for x in hellos:
        assert x["secret"] == SECRET, x
        assert x["args"] == ["--worker", "x y"], x
    names = sorted(x["name"] for x in hellos)
    assert names == ["%s-0#0" % prefix, "%s-1#0" % prefix], names
    return started, hellos


@with_cluster
def test_dial_in_status_and_natural_end(cluster, listener):
    h = Helper(config(cluster.address, listener, "adpe-basic"), as_file=True)
    try:
        _, hellos = dial_in_both(h, listener, "adpe-basic")
        for x in hellos:
            assert x["exe"] == os.path.realpath(STANDIN), x  # shared path: the program itself
        # The scheduler sees "executing" through the workers' heartbeats: ask until it does.
        t0 = time.monotonic()
        while True:
            st = h.status()
            states = {t["name"]: t for t in st["tasks"]}
            if all(t["state"] == "processing" for t in states.values()) or time.monotonic() - t0 > 10:
                break
            time.sleep(0.2)
        timing("status command -> status event", st["took"])
        assert sorted(states) == ["adpe-basic-0", "adpe-basic-1"], st
        for t in states.values():
            assert t["state"] == "processing" and t["where"].startswith("tcp://127.0.0.1:"), st
            assert t["problem"] is None, st
        assert len({t["where"] for t in states.values()}) == 2, st  # one per worker (ADPE=1)
        # The driver closes the connections: the native workers exit 0, their tasks end.
        listener.close_all()
        ended = [h.expect("ended", 15), h.expect("ended", 15)]
        assert sorted(e["name"] for e in ended) == ["adpe-basic-0", "adpe-basic-1"], ended
        for e in ended:
            assert e["exit_code"] == 0 and e["error"] is None, e
        st = h.status()
        assert all(t["state"] == "finished" for t in st["tasks"]), st
        for x in hellos:
            assert wait_until(lambda: not alive(x["pid"]), 5), x
        t0 = time.monotonic()
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0, h.err()
        timing("stop -> helper exited", time.monotonic() - t0)
        assert wait_until(lambda: cluster.scheduler_keys("adpe-basic") == [], 5)
    finally:
        h.kill()


@with_cluster
def test_stop_cancels_running_tasks(cluster, listener):
    h = Helper(config(cluster.address, listener, "adpe-stop"))
    try:
        _, hellos = dial_in_both(h, listener, "adpe-stop")
        t0 = time.monotonic()
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0, h.err()
        timing("stop -> helper exited", time.monotonic() - t0)
        assert cluster.scheduler_keys("adpe-stop") == [], "the futures were not cancelled"
        # The listener still holds the connections: the tasks' own cancellation check ends
        # the children (after its grace), so nothing outlives the task.
        for x in hellos:
            assert wait_until(lambda: not alive(x["pid"]), 15), "native worker %d still running" % x["pid"]
        timing("stop -> cancelled tasks' children gone (grace 3 s)", time.monotonic() - t0)
        # The workers are free again (their one ADPE slot): a new run gets both.
        h2 = Helper(config(cluster.address, listener, "adpe-stop2"))
        try:
            dial_in_both(h2, listener, "adpe-stop2")
            h2.proc.stdin.close()  # end of input means stop
            assert h2.wait(10) == 0, h2.err()
        finally:
            h2.kill()
    finally:
        h.kill()


@with_cluster
def test_kill_and_spawn(cluster, listener):
    # The driver stops one native worker (an item overran): `kill` by the name it knocked
    # with; its task ends, and the replacement the driver asks for (`spawn`) dials in.
    h = Helper(config(cluster.address, listener, "adpe-ks"))
    try:
        _, hellos = dial_in_both(h, listener, "adpe-ks")
        victim = [x for x in hellos if x["name"] == "adpe-ks-1#0"][0]
        other = [x for x in hellos if x is not victim][0]
        h.send('{"cmd": "kill", "name": "adpe-ks-1#7"}')  # another run's name: not this one
        time.sleep(1)
        assert alive(victim["pid"]), "kill of another attempt's name stopped the running one"
        t0 = time.monotonic()
        h.send('{"cmd": "kill", "name": "adpe-ks-1#0"}')
        ev = h.expect("ended", 10)
        timing("kill -> ended", ev["at"] - t0)
        assert ev["name"] == "adpe-ks-1" and ev["exit_code"] == -signal.SIGTERM, ev
        assert "driver's request" in ev["error"], ev
        assert not alive(victim["pid"]) and alive(other["pid"])
        h.send('{"cmd": "spawn", "name": "adpe-ks-2"}')
        h.send('{"cmd": "spawn", "name": "adpe-ks-2"}')  # twice: one task
        again = listener.next(30)
        timing("spawn -> replacement dialed in", again["at"] - t0)
        assert again["name"] == "adpe-ks-2#0" and again["secret"] == SECRET, again
        st = h.status()
        assert [t["name"] for t in st["tasks"]] == ["adpe-ks-0", "adpe-ks-1", "adpe-ks-2"], st
        states = [t["state"] for t in st["tasks"]]
        assert states[1] == "error" and states[0] != "error" and states[2] != "error", st
        time.sleep(0.5)
        assert listener.hellos.empty(), "a second adpe-ks-2 dialed in"
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0
    finally:
        h.kill()


@with_cluster
def test_helper_killed(cluster, listener):
    # The driver and its helper SIGKILLed: the scheduler drops the helper's client and with it
    # the tasks; each task sees that and ends its child (the driver's connections being
    # held open here, as a hung driver would).
    h = Helper(config(cluster.address, listener, "adpe-hk"))
    try:
        _, hellos = dial_in_both(h, listener, "adpe-hk")
        t0 = time.monotonic()
        h.proc.kill()
        for x in hellos:
            assert wait_until(lambda: not alive(x["pid"]), 20), "native worker %d still running" % x["pid"]
        timing("helper SIGKILLed -> native children gone", time.monotonic() - t0)
        assert wait_until(lambda: cluster.scheduler_keys("adpe-hk") == [], 5)
    finally:
        h.kill()


@with_cluster
def test_upload(cluster, listener):
    # The program lives where no worker would look: only its uploaded copy can run.
    tmp = tempfile.mkdtemp(prefix="adpe-upload-src-")
    program = os.path.join(tmp, "native-exe")
    shutil.copy(STANDIN, program)
    os.chmod(program, 0o644)  # not even executable: the task makes its copy so
    h = Helper(config(cluster.address, listener, "adpe-up", program=program, upload=True))
    try:
        started = h.expect("started", 60)
        assert started["upload_name"] == "adpe-up-native-exe", started
        hellos = [listener.next(30), listener.next(30)]
        c = cluster.client()
        try:
            dirs = c.run(lambda dask_worker: dask_worker.local_directory)
        finally:
            c.close()
        for x in hellos:
            assert x["secret"] == SECRET
            assert os.path.dirname(x["exe"]) in [os.path.realpath(d) for d in dirs.values()], (x, dirs)
            assert os.path.basename(x["exe"]) == "adpe-up-native-exe", x
            assert os.access(x["exe"], os.X_OK)
        uploaded = [x["exe"] for x in hellos]
        shutil.rmtree(tmp)
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0, h.err()
        for p in uploaded:
            assert not os.path.exists(p), "the uploaded program was left on the worker: %s" % p
        c = cluster.client()
        try:
            plugins = c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        finally:
            c.close()
        assert "adpe-up-upload" not in plugins, plugins
    finally:
        h.kill()


def test_scheduler_unreachable():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    h = Helper(config("tcp://127.0.0.1:%d" % port, None, "adpe-unreach", connect_timeout=2))
    try:
        ev = h.expect("fatal", 15)
        took = time.monotonic() - t0
        timing("unreachable scheduler -> fatal (connect_timeout 2 s)", took)
        assert ev["kind"] == "scheduler-unreachable", ev
        assert "127.0.0.1:%d" % port in ev["message"], ev
        assert took < 8, took
        assert h.wait(5) != 0
    finally:
        h.kill()
    # A stop while the helper is still trying to connect is honoured at once.
    h = Helper(config("tcp://127.0.0.1:%d" % port, None, "adpe-unreach2", connect_timeout=30))
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        h.send('{"cmd": "stop"}')
        assert h.wait(5) == 0, h.err()
        timing("stop while connecting -> helper exited", time.monotonic() - t0)
    finally:
        h.kill()


@with_cluster
def test_scheduler_lost(cluster, listener):
    h = Helper(config(cluster.address, listener, "adpe-lost"))
    try:
        _, hellos = dial_in_both(h, listener, "adpe-lost")
        time.sleep(0.5)
        t0 = time.monotonic()
        os.killpg(cluster.scheduler.pid, signal.SIGKILL)
        ev = h.expect("fatal", 15)
        took = ev["at"] - t0
        timing("scheduler SIGKILLed -> fatal scheduler-lost", took)
        assert ev["kind"] == "scheduler-lost", ev
        assert took < 5, took
        assert h.wait(5) == 2
        # The native workers are still connected to the driver, which closes them on this fatal.
        listener.close_all()
        for x in hellos:
            assert wait_until(lambda: not alive(x["pid"]), 10), x
    finally:
        h.kill()


@with_cluster
def test_worker_killed_task_rerun(cluster, listener):
    h = Helper(config(cluster.address, listener, "adpe-kill"))
    try:
        _, hellos = dial_in_both(h, listener, "adpe-kill")
        first = [x for x in hellos if x["name"] == "adpe-kill-0#0"][0]
        other = [x for x in hellos if x is not first][0]
        worker_pid = first["ppid"]  # the Dask worker process running the task
        nanny = [i for i in range(2) if cluster.worker_pid(i) == worker_pid]
        assert nanny, "the stand-in's parent %d is no Dask worker process" % worker_pid
        t0 = time.monotonic()
        os.kill(worker_pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(first["pid"]), 5), "the orphaned native worker lived on"
        timing("worker SIGKILLed -> its native child gone (PDEATHSIG)", time.monotonic() - t0)
        assert wait_until(lambda: cluster.worker_pid(nanny[0]) not in (None, worker_pid), 15)
        timing("worker SIGKILLed -> nanny started a new worker process", time.monotonic() - t0)
        again = listener.next(30)
        timing("worker SIGKILLed -> rerun task dialed in again", again["at"] - t0)
        assert again["name"] == "adpe-kill-0#1", again  # attempt 1: one worker died running it
        assert again["secret"] == SECRET
        assert again["ppid"] != worker_pid
        assert alive(other["pid"]), "the other worker's task was disturbed"
        st = h.status()
        t = {x["name"]: x for x in st["tasks"]}
        assert t["adpe-kill-0"]["attempts"] == 1, st
        # No "ended" for the killed run: the task is still running, under its rerun.
        assert h.events.empty() or all(e["event"] == "status" for e in list(h.events.queue)), list(h.events.queue)
        listener.close_all()
        ended = [h.expect("ended", 15), h.expect("ended", 15)]
        assert all(e["exit_code"] == 0 for e in ended), ended
        assert {e["worker_name"] for e in ended} == {"adpe-kill-0#1", "adpe-kill-1#0"}, ended
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0
    finally:
        h.kill()


@with_cluster
def test_killed_worker_after_four_deaths(cluster, listener):
    h = Helper(config(cluster.address, listener, "adpe-kw", workers=1))
    try:
        h.expect("started", 30)
        t0 = time.monotonic()
        for attempt in range(4):  # distributed.scheduler.allowed-failures is 3
            x = listener.next(30)
            assert x["name"] == "adpe-kw-0#%d" % attempt, x
            os.kill(x["ppid"], signal.SIGKILL)
        ev = h.expect("ended", 30)
        timing("4 worker deaths -> KilledWorker reported", ev["at"] - t0)
        assert ev["name"] == "adpe-kw-0" and ev["exit_code"] is None, ev
        assert ev["error"].startswith("KilledWorker:"), ev
        st = h.status()
        assert st["tasks"][0]["state"] == "error", st
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0
    finally:
        h.kill()


@with_cluster
def test_nonzero_exit_reports_stderr(cluster, listener):
    cfg = config(cluster.address, listener, "adpe-exit", workers=1)
    cfg["env"]["STANDIN_EXIT"] = "3"
    h = Helper(cfg)
    try:
        h.expect("started", 30)
        listener.next(30)
        ev = h.expect("ended", 15)
        assert ev["exit_code"] == 3, ev
        assert "exited with code 3" in ev["error"] and "exiting with 3 as told" in ev["error"], ev
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0
    finally:
        h.kill()


@with_cluster
def test_missing_resources_and_bad_program(cluster, listener):
    h = Helper(config(cluster.address, listener, "adpe-res", resources={"GPU": 1}, workers=1))
    try:
        h.expect("started", 30)
        t0 = time.monotonic()
        while True:
            st = h.status()
            t = st["tasks"][0]
            if t["problem"] or time.monotonic() - t0 > 10:
                break
            time.sleep(0.2)
        assert t["state"] == "pending" and "no worker has the resources {'GPU': 1}" in t["problem"], st
        assert "'ADPE': 1" in t["problem"], st  # what the workers do have
        h.send('{"cmd": "stop"}')
        assert h.wait(10) == 0
    finally:
        h.kill()
    h = Helper(config(cluster.address, listener, "adpe-restr", restrict=["tcp://127.0.0.1:1"], workers=1))
    try:
        h.expect("started", 30)
        t0 = time.monotonic()
        while True:
            t = h.status()["tasks"][0]
            if t["problem"] or time.monotonic() - t0 > 10:
                break
            time.sleep(0.2)
        assert t["state"] == "pending" and "no connected worker matches the restriction" in t["problem"], t
    finally:
        h.kill()
    h = Helper(config(cluster.address, listener, "adpe-noexe", program="/nonexistent/exe", workers=1))
    try:
        h.expect("started", 30)
        ev = h.expect("ended", 15)
        assert ev["exit_code"] is None and "cannot start /nonexistent/exe" in ev["error"], ev
    finally:
        h.kill()


def test_bad_config_and_no_distributed():
    h = Helper("this is not json")
    try:
        ev = h.expect("fatal", 10)
        assert ev["kind"] == "bad-config", ev
        assert h.wait(5) == 2
    finally:
        h.kill()
    h = Helper(config("tcp://127.0.0.1:1", None, "adpe-bad", workers=0))
    try:
        ev = h.expect("fatal", 10)
        assert ev["kind"] == "bad-config" and "workers" in ev["message"], ev
    finally:
        h.kill()
    # -S: no site-packages, so no `distributed` (as with a bare system python).
    h = Helper(config("tcp://127.0.0.1:1", None, "adpe-nodist"), python=[PY, "-S"])
    try:
        ev = h.expect("fatal", 10)
        assert ev["kind"] == "no-distributed", ev
        assert sys.executable in ev["message"] and "Python 3." in ev["message"], ev
        assert h.wait(5) == 2
    finally:
        h.kill()


TESTS = [
    test_dial_in_status_and_natural_end,
    test_stop_cancels_running_tasks,
    test_kill_and_spawn,
    test_helper_killed,
    test_upload,
    test_scheduler_unreachable,
    test_scheduler_lost,
    test_worker_killed_task_rerun,
    test_killed_worker_after_four_deaths,
    test_nonzero_exit_reports_stderr,
    test_missing_resources_and_bad_program,
    test_bad_config_and_no_distributed,
]


def main(argv):
    global VERBOSE
    repeat = 1
    only = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-v":
            VERBOSE = True
        elif a == "-k":
            i += 1
            only = argv[i]
        elif a == "--repeat":
            i += 1
            repeat = int(argv[i])
        else:
            sys.exit("usage: test_helper.py [-v] [-k NAME] [--repeat N]")
        i += 1
    passed = failed = 0
    for r in range(repeat):
        for t in TESTS:
            if only and only not in t.__name__:
                continue
            t0 = time.monotonic()
            try:
                t()
                passed += 1
                print("ok   %-45s %6.2fs" % (t.__name__, time.monotonic() - t0), flush=True)
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt):
                    raise
                failed += 1
                print("FAIL %-45s %6.2fs" % (t.__name__, time.monotonic() - t0), flush=True)
                traceback.print_exc()
    print("timings (min / median / max over runs):")
    for name, vals in TIMINGS.items():
        vals = sorted(vals)
        print("  %-58s %6.3f / %6.3f / %6.3f s  (n=%d)" % (name, vals[0], vals[len(vals) // 2], vals[-1], len(vals)))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
