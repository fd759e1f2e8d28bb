#!/usr/bin/env python3
"""adparallelengine's Dask helper: runs the native workers of one engine as Dask tasks.

The Rust driver starts this script (``python3 -c "<this file>"``, or ``python3 adpe_dask.py``)
and talks to it in JSON lines.

stdin, from the driver:
  * first line, the run's configuration::

        {"scheduler": "tcp://127.0.0.1:8786", "workers": 2, "program": "/abs/exe",
         "args": [], "upload": true, "shared_path": null,
         "env": {"ADPARALLELENGINE_DRIVER": "...", "ADPARALLELENGINE_SECRET": "..."},
         "name_prefix": "adpe-1a2b3c", "resources": {"ADPE": 1} | null,
         "restrict": ["tcp://10.0.0.5:4001"] | null, "connect_timeout": 10}

  * then commands, one a line:
      - ``{"cmd": "status"}``: answered by a ``status`` event;
      - ``{"cmd": "spawn", "name": KEY}``: submit one more task under the key KEY (a
        replacement for one that ended);
      - ``{"cmd": "kill", "name": NAME}``: stop the native worker that knocked as NAME
        (``KEY#ATTEMPT``; a bare KEY: whichever run of that task is running); its task then
        ends, with an ``ended`` event;
      - ``{"cmd": "stop"}``: cancel every task and exit 0; end of input means the same.

stdout, to the driver (nothing else is ever written there; logs go to stderr):
  * ``{"event": "started", "dask_version", "tasks": [key...], "scheduler_workers", "upload_name"}``
    once every task is submitted (after the upload, when there is one).
  * ``{"event": "status", "tasks": [{"name", "state", "problem", "where", "attempts", "worker_name"}]}``
    per ``status`` command, every task ever submitted: ``state`` is pending (``problem`` says
    why it does not run: no worker with the resources, none matching the restriction, queued,
    waiting for a thread on its worker), processing (its native worker runs on ``where``),
    finished (exit code 0), error (any other end), cancelled or lost; ``attempts`` counts the
    workers that died running it, so ``worker_name`` (``KEY#ATTEMPTS``) is the name its
    current run knocks with.
  * ``{"event": "ended", "name", "exit_code", "error", "worker_name", "where"}`` when a task's
    future completes: ``exit_code`` is the native worker's (negative: killed by that signal),
    or null when there is none (a ``KilledWorker``, an exception, a cancellation); ``error``
    is null for exit code 0, else says what happened, with the tail of the native worker's
    stderr.
  * ``{"event": "fatal", "kind", "message"}``, then exit status 2; ``kind`` is one of
    no-distributed, bad-config, scheduler-unreachable, scheduler-lost, upload-failed,
    internal (a bug of this helper).

Each task runs the native program as a child process with ADPARALLELENGINE_WORKER_NAME set,
waits for it (polling, never blocking for ever), and returns its exit code and stderr tail.
The child is gone when the task ends: it is killed on any exception, when Dask cancels the
task (after a grace), or when the worker shuts down. A SIGKILLed Dask worker cannot kill it:
the native program sets PR_SET_PDEATHSIG itself.

Needs Python >= 3.9 and ``distributed``; nothing else outside the standard library.
"""

import json
import os
import sys
import threading
import time

# Everything this process prints goes to stderr, but for the protocol's own lines, written to
# a private copy of the original stdout: a library that prints cannot break the protocol.
_OUT = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr
_OUT_LOCK = threading.Lock()

FATAL_EXIT = 2
# How long the driver may be kept waiting when it stops us (the rest is abandoned).
STOP_DEADLINE = 5.0
# How long a cancelled task's child may take to exit on its own before it is killed.
CANCEL_GRACE = 3.0


def emit(obj):
    line = json.dumps(obj, separators=(",", ":"))
    with _OUT_LOCK:
        try:
            _OUT.write(line + "\n")
            _OUT.flush()
        except (BrokenPipeError, OSError):
            pass


def log(msg):
    try:
        sys.stderr.write("adpe_dask: %s\n" % msg)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def fatal(kind, message):
    """Reports an error that ends the run and exits at once (nothing left to wait for)."""
    emit({"event": "fatal", "kind": kind, "message": message})
    log("fatal %s: %s" % (kind, message))
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(FATAL_EXIT)


try:
    import distributed
    from distributed import Client
    from distributed.diagnostics.plugin import UploadFile
except Exception as e:  # ImportError, or a broken install failing at import
    fatal(
        "no-distributed",
        "cannot import the Python package `distributed` (%s: %s) with Python %s at %s; "
        "install it there (`%s -m pip install distributed`) or point the engine at a python "
        "that has it"
        % (type(e).__name__, e, sys.version.split()[0], sys.executable, sys.executable),
    )


def bounded(fn, timeout, default=None):
    """fn() run in a daemon thread: its value, or `default` if it took longer than `timeout`
    (the thread is abandoned) or raised."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: B902 - reported to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return default
    if "error" in box:
        log("%s failed: %s: %s" % (getattr(fn, "__name__", "call"), type(box["error"]).__name__, box["error"]))
        return default
    return box.get("value")


# ---------------------------------------------------------------------------------------------
# What runs on the Dask workers. These functions are pickled by value (this script is
# __main__), so they import what they use and reference no global of this module.


def adpe_task(spec):
    """One native worker: starts the program, waits for it, returns its exit code."""
    import collections
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    key = spec["key"]
    worker = None
    try:
        from distributed import get_worker

        worker = get_worker()
    except Exception:
        pass
    where = worker.address if worker is not None else None

    if spec["upload"]:
        if worker is None:
            raise RuntimeError("%s: not running on a Dask worker, no uploaded program" % key)
        path = os.path.join(worker.local_directory, spec["upload_name"])
        # The plugin is set up before a worker takes tasks; a short wait covers a slow disk.
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not os.path.exists(path):
            raise RuntimeError("%s: the uploaded program is not on worker %s (expected %s)" % (key, where, path))
        mode = os.stat(path).st_mode
        if mode & 0o111 != 0o111:
            os.chmod(path, mode | 0o755)
    else:
        path = spec["path"]

    # Which run of this task this is: the scheduler counts the workers that died while running
    # it (`suspicious`). Asked once, bounded; without an answer the name is the bare key.
    attempt = None
    try:
        from distributed import get_client

        client = get_client(timeout=5)  # this worker's own client (in this thread: its context)
        box = {}

        def ask():
            def suspicious(key, dask_scheduler=None):
                ts = dask_scheduler.tasks.get(key)
                return int(ts.suspicious) if ts is not None else 0

            box["n"] = client.run_on_scheduler(suspicious, key=key)

        t = threading.Thread(target=ask, daemon=True)
        t.start()
        t.join(5)
        attempt = box.get("n")
    except Exception:
        attempt = None
    name = key if attempt is None else "%s#%d" % (key, attempt)

    env = dict(os.environ)
    env.update(spec["env"])
    env["ADPARALLELENGINE_WORKER_NAME"] = name

    tail = collections.deque(maxlen=40)
    tail_lock = threading.Lock()

    def pump(stream, keep):
        # The child's output goes to this worker's log (prefixed with its name); the last lines
        # of its stderr are kept for the error report.
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if keep:
                with tail_lock:
                    tail.append(text[:1000])
            try:
                sys.stderr.write("[%s] %s\n" % (name, text))
                sys.stderr.flush()
            except Exception:
                pass
        stream.close()

    try:
        child = subprocess.Popen(
            [path] + list(spec["args"]),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        raise RuntimeError("%s: cannot start %s on worker %s: %s" % (key, path, where, e))

    # Where the helper's `kill` finds this child (kill_native, run on this worker).
    entry = {"pid": child.pid, "name": name, "kill": False}
    registry = None
    if worker is not None:
        registry = worker.__dict__.setdefault("_adpe_children", {})
        registry[key] = entry

    pumps = [
        threading.Thread(target=pump, args=(child.stdout, False), daemon=True),
        threading.Thread(target=pump, args=(child.stderr, True), daemon=True),
    ]
    for p in pumps:
        p.start()

    def signal_group(sig):
        try:
            os.killpg(child.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                child.send_signal(sig)
            except ProcessLookupError:
                pass

    def end_child():
        if child.poll() is not None:
            return
        signal_group(signal.SIGTERM)
        try:
            child.wait(2)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            child.wait()

    cancelled_at = None
    why = None
    try:
        while True:
            try:
                code = child.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if entry["kill"]:
                why = "stopped at the driver's request"
                end_child()
                code = child.wait()
                break
            if worker is None:
                continue
            # Dask cannot interrupt this thread: a cancelled task, or a worker that shuts down,
            # is seen here, and the child is ended (after a grace: the driver may be closing it).
            status = getattr(getattr(worker, "status", None), "name", "running")
            if status in ("closing", "closed", "failed"):
                why = "the Dask worker is shutting down"
                end_child()
                code = child.wait()
                break
            ts = worker.state.tasks.get(key)
            if ts is None or ts.state in ("cancelled", "released", "forgotten"):
                if cancelled_at is None:
                    cancelled_at = time.monotonic()
                elif time.monotonic() - cancelled_at > spec.get("cancel_grace", 3.0):
                    why = "the task was cancelled"
                    end_child()
                    code = child.wait()
                    break
            else:
                cancelled_at = None
    except BaseException:
        end_child()
        raise
    finally:
        if child.poll() is None:
            end_child()
        if registry is not None and registry.get(key) is entry:
            del registry[key]
    if why is None and entry["kill"]:
        why = "stopped at the driver's request"
    for p in pumps:
        p.join(2)
    with tail_lock:
        stderr_tail = "\n".join(tail)
    return {
        "exit_code": code,
        "stderr_tail": stderr_tail,
        "worker_name": name,
        "where": where,
        "pid": child.pid,
        "why": why,
    }


def kill_native(key, name, dask_worker=None):
    """Run on every worker (in its event loop): sends SIGTERM to the native worker of task
    `key` if it runs here, and flags it so that its task ends it for good. `name` ==
    `key` stops whichever run it is; `key#N` only that run. Whether it was found here."""
    import os
    import signal

    entry = (getattr(dask_worker, "_adpe_children", None) or {}).get(key)
    if entry is None or (name != key and entry["name"] != name):
        return False
    entry["kill"] = True
    try:
        os.killpg(entry["pid"], signal.SIGTERM)
    except OSError:
        pass
    return True


def scheduler_view(keys, dask_scheduler=None):
    """Run on the scheduler: where each task stands, and why one that waits cannot run."""
    s = dask_scheduler
    workers = list(s.workers.values())
    threads = sum(ws.nthreads for ws in workers)

    def resources_text(ws):
        return "%s %s" % (ws.address, dict(ws.resources) if ws.resources else "{}")

    def why_not(ts):
        if not workers:
            return "no Dask worker is connected to the scheduler"
        allowed = workers
        restrict = set(ts.worker_restrictions or ()) | set(ts.host_restrictions or ())
        if restrict:
            allowed = [
                ws for ws in workers if ws.address in restrict or ws.host in restrict or str(ws.name) in restrict
            ]
            if not allowed:
                return "no connected worker matches the restriction %s (connected: %s)" % (
                    sorted(restrict),
                    sorted(ws.address for ws in workers),
                )
        need = dict(ts.resource_restrictions or {})
        if need:
            fit = [ws for ws in allowed if all(ws.resources.get(r, 0) >= n for r, n in need.items())]
            if not fit:
                return "no worker has the resources %s (workers: %s)" % (
                    need,
                    "; ".join(resources_text(ws) for ws in allowed),
                )
        return None

    out = {}
    for k in keys:
        ts = s.tasks.get(k)
        if ts is None:
            out[k] = None
            continue
        where = ts.processing_on.address if ts.processing_on is not None else None
        d = {"state": ts.state, "where": where, "attempts": int(ts.suspicious), "problem": None}
        if ts.state == "no-worker":
            d["problem"] = why_not(ts) or "no worker can run it (Dask's no-worker state)"
        elif ts.state == "queued":
            d["problem"] = "queued: every worker thread is busy (%d threads on %d workers)" % (threads, len(workers))
        elif ts.state == "processing" and ts.processing_on is not None:
            # "processing" means assigned to a worker, which may be running other tasks in all
            # its threads (or resource slots). The workers' heartbeats tell which tasks execute,
            # with a lag: a task is taken as running unless its worker has more tasks than slots.
            ws = ts.processing_on
            slots = ws.nthreads
            for r, n in (ts.resource_restrictions or {}).items():
                if n > 0:
                    slots = min(slots, int(ws.resources.get(r, 0) // n))
            d["executing"] = len(ws.processing) <= slots or ts in ws.executing
        out[k] = d
    return out


# ---------------------------------------------------------------------------------------------
# The driver's side.


class Helper:
    def __init__(self, cfg):
        self.cfg = cfg
        self.client = None
        self.futures = {}  # key -> Future, until it ended
        self.final = {}  # key -> (state, problem, where) once it ended
        self.keys = []
        self.plugin_name = None
        self.submitted_at = time.monotonic()
        self.upload_name = None
        self.lock = threading.Lock()
        self.stopping = False
        self.commands = []
        self.commands_cv = threading.Condition()

    # -- setup ------------------------------------------------------------------------------

    def connect(self):
        cfg = self.cfg
        timeout = cfg["connect_timeout"]
        box = {}

        def make():
            try:
                box["client"] = Client(
                    cfg["scheduler"],
                    timeout=timeout,
                    set_as_default=False,
                    name=cfg["name_prefix"],
                )
            except BaseException as e:  # noqa: B902
                box["error"] = e

        t = threading.Thread(target=make, daemon=True)
        t.start()
        t.join(timeout + 5)
        if "client" in box:
            self.client = box["client"]
            return
        e = box.get("error")
        if isinstance(e, (ValueError, TypeError)):
            fatal("bad-config", "the scheduler address %r is not usable: %s" % (cfg["scheduler"], e))
        fatal(
            "scheduler-unreachable",
            "cannot reach the Dask scheduler at %s within %gs: %s"
            % (cfg["scheduler"], timeout, ("%s: %s" % (type(e).__name__, e)) if e else "timed out"),
        )

    def upload(self):
        cfg = self.cfg
        program = cfg["program"]
        try:
            plugin = UploadFile(program, load=False)
        except OSError as e:
            fatal("upload-failed", "cannot read the program %s to upload it: %s" % (program, e))
        # UploadFile writes <worker local_directory>/<basename of the file> and registers as
        # "upload_file": both are made this run's own, so that two engines sharing a cluster
        # (or a program still running from an earlier run) never overwrite each other.
        self.upload_name = "%s-%s" % (cfg["name_prefix"], os.path.basename(program))
        self.plugin_name = "%s-upload" % cfg["name_prefix"]
        plugin.filename = self.upload_name
        plugin.name = self.plugin_name
        box = {}

        def register():
            try:
                self.client.register_plugin(plugin, name=self.plugin_name)
                box["ok"] = True
            except BaseException as e:  # noqa: B902
                box["error"] = e

        t = threading.Thread(target=register, daemon=True)
        t.start()
        t.join(max(60.0, 4 * cfg["connect_timeout"]))
        if not box.get("ok"):
            e = box.get("error")
            bounded(lambda: self.client.unregister_worker_plugin(self.plugin_name), 2)
            fatal(
                "upload-failed",
                "uploading %s (%d bytes) to the Dask workers failed: %s"
                % (program, len(plugin.data), ("%s: %s" % (type(e).__name__, e)) if e else "timed out"),
            )
        log("uploaded %s to the workers as %s" % (program, self.upload_name))

    def submit_one(self, key):
        """Submits the task `key` (the caller holds the lock)."""
        cfg = self.cfg
        spec = {
            "key": key,
            "upload": cfg["upload"],
            "upload_name": self.upload_name,
            "path": cfg["shared_path"] or cfg["program"],
            "args": cfg["args"],
            "env": cfg["env"],
            "cancel_grace": CANCEL_GRACE,
        }
        kwargs = {"key": key, "pure": False, "retries": 0}
        if cfg["resources"]:
            kwargs["resources"] = cfg["resources"]
        if cfg["restrict"]:
            kwargs["workers"] = cfg["restrict"]
            kwargs["allow_other_workers"] = False
        fut = self.client.submit(adpe_task, spec, **kwargs)
        self.futures[key] = fut
        self.keys.append(key)
        self.submitted_at = time.monotonic()
        return fut

    def submit(self):
        with self.lock:
            if self.stopping:
                return False
            futures = [self.submit_one("%s-%d" % (self.cfg["name_prefix"], i)) for i in range(self.cfg["workers"])]
        for fut in futures:
            fut.add_done_callback(self.on_done)
        return True

    def spawn(self, key):
        """One more task (the driver's replacement for one that ended)."""
        if not isinstance(key, str) or not key or "#" in key:
            log("spawn: ignored the name %r (a task key: no '#')" % (key,))
            return
        with self.lock:
            if self.stopping:
                return
            if key in self.keys:
                log("spawn: a task %s exists already; ignored" % key)
                return
            fut = self.submit_one(key)
        fut.add_done_callback(self.on_done)
        log("submitted the task %s" % key)

    def kill(self, name):
        """Stops the native worker that knocked as `name` (its task then ends)."""
        if not isinstance(name, str) or not name:
            log("kill: ignored the name %r" % (name,))
            return
        key = name.split("#", 1)[0]
        with self.lock:
            fut = self.futures.get(key)
        if fut is None:
            log("kill: no running task %s (for %s)" % (key, name))
            return
        found = bounded(lambda: self.client.run(kill_native, key, name, wait=True), 5) or {}
        if any(found.values()):
            log("kill: stopping %s on %s" % (name, ", ".join(w for w, hit in found.items() if hit)))
        elif fut.status == "pending" and name == key:
            # Not started yet: it never will be. Its "ended" says it was cancelled.
            log("kill: %s was not running; cancelling it" % key)
            bounded(lambda: self.client.cancel([fut], force=True), 3)
        else:
            log("kill: %s is not running on any worker" % name)

    # -- events -----------------------------------------------------------------------------

    def on_done(self, fut):
        key = fut.key
        if self.stopping:
            return
        status = fut.status
        exit_code = None
        error = None
        worker_name = None
        where = None
        if status == "finished":
            try:
                res = fut.result(timeout=30)
                exit_code = res.get("exit_code")
                worker_name = res.get("worker_name")
                where = res.get("where")
                if exit_code != 0:
                    if exit_code is not None and exit_code < 0:
                        error = "the native worker was killed by signal %d" % -exit_code
                    else:
                        error = "the native worker exited with code %s" % exit_code
                    if res.get("why"):
                        error += " (%s)" % res["why"]
                    if res.get("stderr_tail"):
                        error += "; its stderr ended with:\n" + res["stderr_tail"]
            except Exception as e:
                error = "cannot fetch the task's result: %s: %s" % (type(e).__name__, e)
        elif status == "cancelled":
            exc = getattr(getattr(fut, "_state", None), "exception", None)
            reason = getattr(exc, "reason", None)
            if reason == "scheduler-connection-lost" or (self.client is not None and self.client.status != "running"):
                self.scheduler_lost("the client lost its connection to the scheduler")
                return
            error = "the Dask task was cancelled%s" % (" (%s)" % reason if reason else "")
        elif status == "error":
            try:
                exc = fut.exception(timeout=30)
                error = "%s: %s" % (type(exc).__name__, exc)
            except Exception as e:
                error = "the Dask task failed (%s: %s)" % (type(e).__name__, e)
        else:
            error = "the Dask task ended as %s" % status
        with self.lock:
            if self.stopping:
                return
            self.futures.pop(key, None)
            state = "finished" if error is None else ("cancelled" if status == "cancelled" else "error")
            self.final[key] = (state, error, where)
        emit(
            {
                "event": "ended",
                "name": key,
                "exit_code": exit_code,
                "error": error,
                "worker_name": worker_name,
                "where": where,
            }
        )
        # The scheduler forgets it: a lost result is never recomputed (rerunning a worker).
        try:
            fut.release()
        except Exception:
            pass

    def scheduler_lost(self, why):
        with self.lock:
            if self.stopping:
                return
            self.stopping = True
        fatal("scheduler-lost", "lost the Dask scheduler at %s: %s" % (self.cfg["scheduler"], why))

    def watch(self):
        """Sees a lost scheduler promptly: the client leaves "running" as soon as its
        connection drops; a scheduler that still holds the connection but stops answering is
        caught by a bounded identity call every few seconds."""
        last_ping = time.monotonic()
        failures = 0
        while not self.stopping:
            time.sleep(0.2)
            if self.stopping:
                return
            status = self.client.status
            if status != "running":
                time.sleep(0.3)
                if not self.stopping and self.client.status != "running":
                    self.scheduler_lost("the connection dropped (client %s)" % self.client.status)
                    return
            if time.monotonic() - last_ping > 3:
                last_ping = time.monotonic()
                ok = bounded(lambda: self.client.sync(self.client.scheduler.identity), 5, default=None)
                failures = 0 if ok is not None else failures + 1
                if failures >= 2 and not self.stopping:
                    self.scheduler_lost("it did not answer for %ds" % 10)
                    return

    def status(self):
        with self.lock:
            keys = list(self.keys)
            live = dict(self.futures)
            final = dict(self.final)
        asking = [k for k in keys if k in live]
        view = {}
        note = None
        if asking:
            got = bounded(lambda: self.client.run_on_scheduler(scheduler_view, keys=asking), 5)
            if got is None:
                # Fallback that needs no code run on the scheduler: who processes what.
                note = "the scheduler did not describe its tasks"
                proc = bounded(lambda: self.client.processing(), 5) or {}
                for addr, ks in proc.items():
                    for k in ks:
                        view[k] = {"state": "processing", "where": addr, "problem": None, "attempts": None}
            else:
                view = got
        out = []
        for k in keys:
            if k in final:
                state, problem, where = final[k]
                out.append(
                    {"name": k, "state": state, "problem": problem, "where": where, "attempts": None, "worker_name": None}
                )
                continue
            fut = live.get(k)
            fs = fut.status if fut is not None else "lost"
            v = view.get(k)
            entry = {"name": k, "state": "pending", "problem": None, "where": None, "attempts": None, "worker_name": None}
            if fs != "pending":
                entry["state"] = fs  # finished, error, cancelled, lost: its "ended" is on its way
            elif v is None:
                # Just submitted, the scheduler may not have it yet; long after, it is lost.
                if note:
                    entry["problem"] = note
                elif time.monotonic() - self.submitted_at > 5:
                    entry["problem"] = "the scheduler does not know the task"
            else:
                entry["attempts"] = v.get("attempts")
                if entry["attempts"] is not None:
                    entry["worker_name"] = "%s#%d" % (k, entry["attempts"])
                entry["problem"] = v.get("problem")
                st = v.get("state")
                if st == "processing":
                    entry["where"] = v.get("where")
                    if v.get("executing", True):
                        entry["state"] = "processing"
                    else:
                        entry["problem"] = "assigned to %s, waiting there for a free thread" % v.get("where")
                elif st == "memory":
                    entry["state"] = "finished"
                elif st == "erred":
                    entry["state"] = "error"
                elif st == "forgotten":
                    entry["state"] = "lost"
            out.append(entry)
        emit({"event": "status", "tasks": out})

    # -- commands ---------------------------------------------------------------------------

    def read_commands(self):
        """stdin after the configuration: runs in its own thread, so that a stop is honoured
        at once, even during the setup."""
        stdin = sys.stdin.buffer
        while True:
            try:
                line = stdin.readline()
            except (OSError, ValueError):
                line = b""
            if not line:
                self.stop("end of input")
                return
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line.decode("utf-8"))
                cmd = msg.get("cmd")
            except (ValueError, AttributeError, UnicodeDecodeError):
                log("ignored a line that is not a command: %r" % line[:200])
                continue
            if cmd == "stop":
                self.stop("stop command")
                return
            if cmd in ("status", "spawn", "kill"):
                with self.commands_cv:
                    self.commands.append(msg)
                    self.commands_cv.notify()
            else:
                log("ignored an unknown command %r" % (cmd,))

    def serve(self):
        while True:
            with self.commands_cv:
                while not self.commands:
                    self.commands_cv.wait()
                msg = self.commands.pop(0)
            if self.stopping:
                return
            cmd = msg.get("cmd")
            try:
                if cmd == "status":
                    self.status()
                elif cmd == "spawn":
                    self.spawn(msg.get("name"))
                elif cmd == "kill":
                    self.kill(msg.get("name"))
            except Exception as e:
                log("%s failed: %s: %s" % (cmd, type(e).__name__, e))
                if cmd == "status":
                    emit({"event": "status", "tasks": [], "error": "%s: %s" % (type(e).__name__, e)})

    def stop(self, why):
        with self.lock:
            already = self.stopping
            self.stopping = True
            futures = list(self.futures.values())
        if already:
            return
        log("stopping (%s)" % why)
        # Whatever is not done by then is abandoned: the driver must not be kept waiting.
        timer = threading.Timer(STOP_DEADLINE, lambda: os._exit(0))
        timer.daemon = True
        timer.start()
        client = self.client
        if client is not None:
            if futures:
                bounded(lambda: client.cancel(futures, force=True), 3)
            if self.plugin_name is not None:
                name, upload_name = self.plugin_name, self.upload_name
                bounded(lambda: client.unregister_worker_plugin(name), 2)

                def remove(filename, dask_worker=None):
                    import os

                    try:
                        os.remove(os.path.join(dask_worker.local_directory, filename))
                        return True
                    except OSError:
                        return False

                bounded(lambda: client.run(remove, upload_name, wait=True), 2)
            bounded(lambda: client.close(timeout=2), 3)
        try:
            _OUT.flush()
        except OSError:
            pass
        os._exit(0)


def read_config():
    line = sys.stdin.buffer.readline()
    if not line:
        # No configuration at all: the driver went away before it wrote one.
        os._exit(0)
    try:
        cfg = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        fatal("bad-config", "the first line is not JSON: %s" % e)
    if not isinstance(cfg, dict):
        fatal("bad-config", "the first line is not a JSON object")

    def need(name, types, what, optional=False):
        v = cfg.get(name)
        if v is None and optional:
            return None
        ok = isinstance(v, bool) if types is bool else isinstance(v, types) and not isinstance(v, bool)
        if not ok:
            fatal("bad-config", "`%s` must be %s, got %r" % (name, what, v))
        return v

    need("scheduler", str, "a scheduler address")
    workers = need("workers", int, "a number of workers")
    if workers < 1:
        fatal("bad-config", "`workers` must be at least 1, got %d" % workers)
    need("program", str, "the program's path")
    cfg["args"] = need("args", list, "a list of strings", optional=True) or []
    if not all(isinstance(a, str) for a in cfg["args"]):
        fatal("bad-config", "`args` must be a list of strings")
    cfg["upload"] = need("upload", bool, "true or false", optional=True) or False
    need("shared_path", str, "a path or null", optional=True)
    cfg["env"] = need("env", dict, "an object of strings", optional=True) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg["env"].items()):
        fatal("bad-config", "`env` must map strings to strings")
    need("name_prefix", str, "a name")
    res = need("resources", dict, "an object of numbers or null", optional=True)
    if res is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in res.values()):
        fatal("bad-config", "`resources` must map names to numbers")
    cfg["resources"] = res or None
    restrict = need("restrict", list, "a list of worker addresses or null", optional=True)
    if restrict is not None and not all(isinstance(w, str) for w in restrict):
        fatal("bad-config", "`restrict` must be a list of strings")
    cfg["restrict"] = restrict or None
    timeout = cfg.get("connect_timeout", 10)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        fatal("bad-config", "`connect_timeout` must be a positive number of seconds, got %r" % (timeout,))
    cfg["connect_timeout"] = float(timeout)
    if not cfg["upload"] and cfg.get("shared_path") is None and not os.path.isabs(cfg["program"]):
        fatal("bad-config", "`program` must be an absolute path, got %r" % cfg["program"])
    return cfg


def main():
    cfg = read_config()
    helper = Helper(cfg)
    threading.Thread(target=helper.read_commands, name="adpe-stdin", daemon=True).start()
    helper.connect()
    if cfg["upload"] and not helper.stopping:
        helper.upload()
    if not helper.submit():
        return
    nworkers = bounded(lambda: len(helper.client.scheduler_info()["workers"]), 5)
    emit(
        {
            "event": "started",
            "dask_version": distributed.__version__,
            "tasks": list(helper.keys),
            "scheduler_workers": nworkers,
            "upload_name": helper.upload_name,
        }
    )
    threading.Thread(target=helper.watch, name="adpe-watch", daemon=True).start()
    helper.serve()


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: B902 - the driver must hear of it
        fatal("internal", "the Dask helper failed: %s: %s" % (type(e).__name__, e))
    # serve() only returns when stopping, and stop() exits: wait for it.
    while True:
        time.sleep(1)
