#!/usr/bin/env python3
"""Self-checking fidelity test for k8s_sim.py.

Starts the simulator, drives it with the real `kubectl` and with plain HTTP
(urllib), and checks the answers look like a real apiserver's.  Exits non-zero
with a clear message on any mismatch.

    python3 tools/k8s-sim/fidelity_test.py [--kubectl PATH] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "k8s_sim.py")
NODE_LABELS = "kubernetes.io/hostname=sim-node,sim.example/pool=workers"


class Mismatch(Exception):
    pass


def check(condition: Any, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Mismatch(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def processes_with(marker: str) -> list[str]:
    """Command lines (of live, non-zombie processes) that contain marker."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z" and pid != str(os.getpid()):
            found.append(f"{pid}: {cmd.strip()}")
    return found


def marker_seconds() -> str:
    """A unique sleep duration, so that the test can find its own pod processes."""
    return f"{40 + random.random() * 10:.6f}"


# --------------------------------------------------------------------------- simulator and clients


class Simulator:
    def __init__(self, workdir: str, name: str = "sim"):
        self.kubeconfig = os.path.join(workdir, f"{name}.kubeconfig")
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, SIM, "--port", "0", "--kubeconfig", self.kubeconfig, "--node-labels", NODE_LABELS],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        line = self._first_line(timeout=10)
        check(line.startswith("listening on http://127.0.0.1:"), f"unexpected first stdout line {line!r}")
        self.url = line.split(" ", 2)[2]
        check(os.path.exists(self.kubeconfig), "simulator did not write the kubeconfig")

    def _first_line(self, timeout: float) -> str:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        check(result, f"simulator printed nothing within {timeout}s; stderr:\n{self.stderr_tail()}")
        return result[0].decode().strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 8) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Mismatch(f"simulator did not exit within {timeout}s of signal {sig}")
        finally:
            self._stderr.close()

    def stderr_tail(self, n: int = 30) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ---- plain HTTP

    def http(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json",
                                              "Authorization": "Bearer anything"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


class Kubectl:
    def __init__(self, binary: str, sim: Simulator, workdir: str, verbose: bool):
        self.base = [binary, "--kubeconfig", sim.kubeconfig, "--cache-dir", os.path.join(workdir, "kcache")]
        self.verbose = verbose

    def run(self, *args: str, stdin: str | None = None, ok: bool = True, timeout: float = 25) -> subprocess.CompletedProcess:
        cmd = self.base + list(args)
        try:
            res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Mismatch(f"`kubectl {' '.join(args)}` did not finish within {timeout}s") from None
        if self.verbose:
            print(f"    $ kubectl {' '.join(args)} -> {res.returncode}\n" +
                  "".join(f"      | {line}\n" for line in (res.stdout + res.stderr).splitlines()))
        if ok and res.returncode != 0:
            raise Mismatch(f"`kubectl {' '.join(args)}` failed ({res.returncode}): {res.stderr.strip()}")
        if not ok and res.returncode == 0:
            raise Mismatch(f"`kubectl {' '.join(args)}` succeeded but should have failed: {res.stdout.strip()}")
        return res

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.base + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def job_yaml(name: str, script: str, parallelism: int = 2, backoff: int | None = None,
             image: str = "busybox:1.36") -> str:
    extra = f"\n  backoffLimit: {backoff}" if backoff is not None else ""
    return f"""apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  parallelism: {parallelism}{extra}
  template:
    metadata:
      labels:
        app: fidelity
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: {image}
        command: ["/bin/sh", "-c", {json.dumps(script)}]
"""


def pod_json(name: str, command: list[str], image: str = "busybox", labels: dict | None = None,
             node_selector: dict | None = None, env: list | None = None) -> dict:
    spec: dict[str, Any] = {"restartPolicy": "Never",
                            "containers": [{"name": "c", "image": image, "command": command, "env": env or []}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def pods_of(k: Kubectl, job: str) -> list[dict]:
    return k.json("get", "pods", "-l", f"job-name={job}")["items"]


def pod_status_column(k: Kubectl, name: str) -> str:
    lines = k.run("get", "pod", name, "--no-headers").stdout.split()
    return lines[2] if len(lines) > 2 else ""


# --------------------------------------------------------------------------- tests


def test_discovery(k: Kubectl, sim: Simulator) -> None:
    version = json.loads(k.run("version", "-o", "json").stdout)
    check("k8s-sim" in version.get("serverVersion", {}).get("gitVersion", ""),
          f"kubectl version did not show the simulator: {version}")
    resources = k.run("api-resources").stdout
    for needle in ("jobs", "batch/v1", "pods", "secrets", "namespaces"):
        check(needle in resources, f"`kubectl api-resources` lacks {needle!r}:\n{resources}")
    status, body = sim.http("GET", "/apis/batch/v1")
    check(status == 200 and body.get("kind") == "APIResourceList", f"/apis/batch/v1 answered {status} {body}")
    jobs = next((r for r in body["resources"] if r["name"] == "jobs"), {})
    check(jobs.get("namespaced") is True and "watch" in jobs.get("verbs", []), f"bad jobs discovery entry {jobs}")


def test_job_runs_and_completes(k: Kubectl, sim: Simulator) -> None:
    name = "hello"
    out = k.run("create", "-f", "-", stdin=job_yaml(name, "echo hi; sleep 1")).stdout
    check(f"job.batch/{name} created" in out, f"unexpected create output {out!r}")
    job = k.json("get", "job", name)
    meta = job["metadata"]
    check(job["kind"] == "Job" and job["apiVersion"] == "batch/v1", f"bad kind/apiVersion {job.get('kind')}")
    for field in ("uid", "resourceVersion", "creationTimestamp", "namespace"):
        check(meta.get(field), f"job metadata lacks {field}: {meta}")
    check(job["spec"]["parallelism"] == 2, f"parallelism not kept: {job['spec']}")
    watcher = k.popen("get", "pods", "-l", f"job-name={name}", "--watch")
    try:
        k.run("wait", "--for=condition=complete", f"job/{name}", "--timeout=20s")
        time.sleep(0.3)
    finally:
        watcher.terminate()
        watched = watcher.communicate(timeout=5)[0]
    pods = pods_of(k, name)
    check(len(pods) == 2, f"expected 2 pods for the job, got {[p['metadata']['name'] for p in pods]}")
    for pod in pods:
        pname, labels = pod["metadata"]["name"], pod["metadata"].get("labels", {})
        check(pname.startswith(f"{name}-") and len(pname) == len(name) + 6, f"bad pod name {pname}")
        check(labels.get("job-name") == name and labels.get("controller-uid") == meta["uid"],
              f"pod {pname} lacks job labels: {labels}")
        check(labels.get("app") == "fidelity", f"pod {pname} lacks the template's labels: {labels}")
        owner = (pod["metadata"].get("ownerReferences") or [{}])[0]
        check(owner.get("uid") == meta["uid"] and owner.get("kind") == "Job" and owner.get("controller"),
              f"pod {pname} has bad ownerReferences {owner}")
        check(pod["status"]["phase"] == "Succeeded", f"pod {pname} phase {pod['status']['phase']}")
        term = pod["status"]["containerStatuses"][0]["state"].get("terminated", {})
        check(term.get("exitCode") == 0 and term.get("reason") == "Completed", f"pod {pname} terminated {term}")
        check(pod["status"].get("podIP") == "127.0.0.1" and pod["spec"].get("nodeName") == "sim-node",
              f"pod {pname} lacks podIP/nodeName")
        logs = k.run("logs", pname).stdout
        check(logs.strip() == "hi", f"logs of {pname} are {logs!r}")
        check(pname in watched, f"`kubectl get pods --watch` never showed {pname}:\n{watched}")
    check("Completed" in watched, f"`kubectl get pods --watch` never showed Completed:\n{watched}")
    status = k.json("get", "job", name)["status"]
    check(status.get("succeeded") == 2 and not status.get("active"), f"bad job status {status}")
    complete = [c for c in status.get("conditions", []) if c["type"] == "Complete"]
    check(complete and complete[0]["status"] == "True", f"job has no Complete condition: {status}")
    table = k.run("get", "job", name).stdout
    check("Complete" in table and "2/1 of 2" in table, f"`kubectl get job` table:\n{table}")

    out = k.run("delete", "job", name, "--cascade=foreground").stdout
    check(f'job.batch "{name}" deleted' in out, f"unexpected delete output {out!r}")
    err = k.run("get", "job", name, ok=False).stderr
    check("NotFound" in err and f'jobs.batch "{name}" not found' in err, f"get after delete said {err!r}")
    check(not pods_of(k, name), "pods of the deleted job are still there")


def test_foreground_delete_waits_for_pods(k: Kubectl, sim: Simulator) -> None:
    name, marker = "sleeper", marker_seconds()
    # The pods outlive their SIGTERM by 5 s, so that the job under foreground deletion is
    # still there when kubectl looks (with 1 s, a loaded CI machine's kubectl calls took
    # longer than that and found the job already gone).
    script = f"trap 'sleep 5; exit 0' TERM; sleep {marker} & wait"
    k.run("create", "-f", "-", stdin=job_yaml(name, script))
    wait_until(lambda: [p for p in pods_of(k, name) if p["status"].get("phase") == "Running"] == pods_of(k, name)
               and len(pods_of(k, name)) == 2, 10, "2 running sleeper pods")
    check(len(processes_with(f"sleep {marker}")) >= 2, f"pod processes not found: {processes_with(marker)}")
    k.run("delete", "job", name, "--cascade=foreground", "--wait=false")
    job = k.json("get", "job", name)
    check(job["metadata"].get("deletionTimestamp"), "job under foreground deletion has no deletionTimestamp")
    check("foregroundDeletion" in job["metadata"].get("finalizers", []),
          f"job under foreground deletion lacks the foregroundDeletion finalizer: {job['metadata']}")
    pods = pods_of(k, name)
    check(pods and all(p["metadata"].get("deletionTimestamp") for p in pods),
          "pods of a job under foreground deletion are not terminating")
    check("Terminating" in k.run("get", "pods", "-l", f"job-name={name}").stdout, "pods not shown Terminating")
    k.run("wait", "--for=delete", f"job/{name}", "--timeout=15s")
    check(not pods_of(k, name), "pods remain after the job was deleted")
    wait_until(lambda: not processes_with(marker), 3, f"pod processes to exit: {processes_with(marker)}")


def test_missing_image(k: Kubectl, sim: Simulator) -> None:
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("pull", ["/bin/true"], image="missing/x")))
    seen: list[str] = []

    def backoff() -> bool:
        column = pod_status_column(k, "pull")
        if not seen or seen[-1] != column:
            seen.append(column)
        return column == "ImagePullBackOff"
    wait_until(backoff, 6, "ImagePullBackOff in `kubectl get pods`")
    check("ErrImagePull" in seen, f"never saw ErrImagePull, saw {seen}")
    pod = k.json("get", "pod", "pull")
    check(pod["status"]["phase"] == "Pending", f"missing-image pod phase {pod['status']['phase']}")
    k.run("delete", "pod", "pull")


def test_node_selector(k: Kubectl, sim: Simulator) -> None:
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("unsched", ["/bin/true"], node_selector={"disktype": "ssd"})))
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("placed", ["/bin/true"],
                                                         node_selector={"sim.example/pool": "workers"})))

    def unschedulable() -> bool:
        conds = k.json("get", "pod", "unsched")["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                   for c in conds)
    wait_until(unschedulable, 5, "PodScheduled=False/Unschedulable on a pod with a foreign nodeSelector")
    pod = k.json("get", "pod", "unsched")
    check(pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName"), "unschedulable pod was placed")
    wait_until(lambda: k.json("get", "pod", "placed")["status"].get("phase") == "Succeeded", 5,
               "the pod whose nodeSelector matches --node-labels to succeed")
    k.run("delete", "pod", "unsched", "placed")


def test_backoff_limit(k: Kubectl, sim: Simulator) -> None:
    name = "failing"
    k.run("create", "-f", "-", stdin=job_yaml(name, "echo oops >&2; exit 3", parallelism=1, backoff=1))
    k.run("wait", "--for=condition=failed", f"job/{name}", "--timeout=15s")
    status = k.json("get", "job", name)["status"]
    failed = [c for c in status.get("conditions", []) if c["type"] == "Failed"]
    check(failed and failed[0].get("reason") == "BackoffLimitExceeded", f"bad failed condition {status}")
    check(status.get("failed") == 2, f"backoffLimit 1 should give 2 failed pods, status {status}")
    for pod in pods_of(k, name):
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        check(term["exitCode"] == 3 and term["reason"] == "Error", f"bad terminated state {term}")
        check(k.run("logs", pod["metadata"]["name"]).stdout.strip() == "oops", "stderr not captured in logs")
    k.run("delete", "job", name)


def test_secret_env(k: Kubectl, sim: Simulator) -> None:
    k.run("create", "secret", "generic", "creds", "--from-literal=token=s3cr3t")
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
           {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("envpod", ["/bin/sh", "-c", "echo $TOKEN $POD $IP"], env=env)))
    wait_until(lambda: k.json("get", "pod", "envpod")["status"].get("phase") == "Succeeded", 5, "envpod to finish")
    logs = k.run("logs", "envpod").stdout.strip()
    check(logs == "s3cr3t envpod 127.0.0.1", f"env from secret/fieldRef wrong: {logs!r}")
    check("Opaque" in k.run("get", "secret", "creds").stdout, "`kubectl get secret` table lacks the type")
    k.run("delete", "secret", "creds")
    err = k.run("get", "secret", "creds", ok=False).stderr
    check('secrets "creds" not found' in err, f"deleted secret still answered: {err!r}")
    k.run("delete", "pod", "envpod")


def secret_json(name: str, owner: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "controller": False,
                                    "blockOwnerDeletion": False}]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
            "stringData": {"key": "value"}}


def secret_exists(k: Kubectl, name: str) -> bool:
    return k.run("get", "secret", name, "--ignore-not-found", "-o", "name").stdout.strip() != ""


def test_owned_secret_goes_with_its_job(k: Kubectl, sim: Simulator) -> None:
    # A Secret owned by a Job (as the backend makes its run's Secret) is deleted by the garbage
    # collector with the Job: background (kubectl's default) and foreground propagation; an
    # orphaning delete leaves it, without the ownerReference.
    for cascade in ("background", "foreground", "orphan"):
        job, secret = f"owner-{cascade}", f"owned-{cascade}"
        k.run("create", "-f", "-", stdin=job_yaml(job, "sleep 30", parallelism=1))
        owner = k.json("get", "job", job)
        k.run("create", "-f", "-", stdin=json.dumps(secret_json(secret, owner)))
        refs = k.json("get", "secret", secret)["metadata"].get("ownerReferences") or []
        check(len(refs) == 1 and refs[0].get("uid") == owner["metadata"]["uid"] and refs[0].get("kind") == "Job",
              f"the Secret's ownerReferences were not kept: {refs}")
        k.run("delete", "job", job, f"--cascade={cascade}", "--timeout=15s")
        if cascade == "orphan":
            time.sleep(0.5)
            check(secret_exists(k, secret), "an orphaning delete of the Job deleted its Secret")
            refs = k.json("get", "secret", secret)["metadata"].get("ownerReferences")
            check(not refs, f"an orphaned Secret still names its deleted owner: {refs}")
            k.run("delete", "secret", secret)
            k.run("delete", "pods", "-l", f"job-name={job}", "--wait=false")
        else:
            wait_until(lambda: not secret_exists(k, secret), 5, f"the Secret of the {cascade}-deleted Job to go")
    # An owner that is already gone when its dependent is made: the dependent is collected.
    k.run("create", "-f", "-", stdin=job_yaml("gone", "true", parallelism=1))
    gone = k.json("get", "job", "gone")
    k.run("delete", "job", "gone", "--timeout=15s")
    k.run("create", "-f", "-", stdin=json.dumps(secret_json("orphan-at-birth", gone)))
    wait_until(lambda: not secret_exists(k, "orphan-at-birth"), 5, "a Secret whose owner is gone to be collected")


def test_config_error_is_retried(k: Kubectl, sim: Simulator) -> None:
    # A pod whose Secret does not exist yet waits in CreateContainerConfigError, and starts
    # once the Secret is there (the kubelet retries).
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("waits", ["/bin/sh", "-c", "echo $TOKEN"], env=env)))
    wait_until(lambda: pod_status_column(k, "waits") == "CreateContainerConfigError", 5,
               "CreateContainerConfigError in `kubectl get pods`")
    k.run("create", "secret", "generic", "late", "--from-literal=token=arrived")
    wait_until(lambda: k.json("get", "pod", "waits")["status"].get("phase") == "Succeeded", 10,
               "the pod to run once its Secret exists")
    logs = k.run("logs", "waits").stdout.strip()
    check(logs == "arrived", f"the pod read {logs!r} from its late Secret")
    k.run("delete", "pod", "waits")
    k.run("delete", "secret", "late")


def test_error_statuses(k: Kubectl, sim: Simulator) -> None:
    yaml = job_yaml("dup", "true", parallelism=1)
    k.run("create", "-f", "-", stdin=yaml)
    err = k.run("create", "-f", "-", stdin=yaml, ok=False).stderr
    check("AlreadyExists" in err, f"duplicate create said {err!r}")
    bad = yaml.replace("restartPolicy: Never", "restartPolicy: Always").replace("name: dup", "name: bad")
    err = k.run("create", "-f", "-", stdin=bad, ok=False).stderr
    check("is invalid" in err and "restartPolicy" in err, f"invalid job said {err!r}")

    code, body = sim.http("GET", "/api/v1/namespaces/default/pods/nope")
    check(code == 404 and body.get("kind") == "Status" and body.get("reason") == "NotFound"
          and body.get("code") == 404 and body.get("details", {}).get("name") == "nope", f"404 answer {body}")
    code, body = sim.http("POST", "/apis/batch/v1/namespaces/default/jobs",
                          {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "dup"},
                           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                          "containers": [{"name": "c", "image": "i"}]}}}})
    check(code == 409 and body.get("reason") == "AlreadyExists", f"409 answer {code} {body}")
    code, body = sim.http("POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "x"}, "spec": {}})
    causes = body.get("details", {}).get("causes", [])
    check(code == 422 and body.get("reason") == "Invalid" and any(c.get("field") == "spec.containers" for c in causes),
          f"422 answer {code} {body}")
    code, body = sim.http("DELETE", "/apis/batch/v1/namespaces/default/jobs/dup", {"propagationPolicy": "Bogus"})
    check(code == 422, f"bad propagationPolicy answered {code} {body}")
    code, body = sim.http("DELETE", "/apis/batch/v1/namespaces/default/jobs/dup", {"propagationPolicy": "Background"})
    check(code == 200 and body.get("kind") == "Status" and body.get("status") == "Success", f"delete {code} {body}")


def read_watch(sim: Simulator, path: str, events: list[dict], headers: dict) -> None:
    with urllib.request.urlopen(sim.url + path, timeout=15) as resp:
        headers.update(resp.headers)
        for line in resp:
            events.append(json.loads(line))


def test_http_watch(k: Kubectl, sim: Simulator) -> None:
    _, listing = sim.http("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dwatched")
    start_rv = listing["metadata"]["resourceVersion"]
    events: list[dict] = []
    headers: dict = {}
    path = "/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dwatched&timeoutSeconds=3"
    t0 = time.monotonic()
    reader = threading.Thread(target=read_watch, args=(sim, path, events, headers), daemon=True)
    reader.start()
    time.sleep(0.3)
    for name, app in (("w-1", "watched"), ("w-other", "other")):
        code, body = sim.http("POST", "/api/v1/namespaces/default/pods", pod_json(name, ["/bin/true"], labels={"app": app}))
        check(code == 201, f"POST pod answered {code} {body}")
    wait_until(lambda: any(e["object"].get("status", {}).get("phase") == "Succeeded" for e in events), 5,
               "a watch event showing the watched pod Succeeded")
    code, _ = sim.http("DELETE", "/api/v1/namespaces/default/pods/w-1", {"propagationPolicy": "Background"})
    check(code == 200, f"DELETE pod answered {code}")
    reader.join(8)
    elapsed = time.monotonic() - t0
    check(not reader.is_alive(), "the watch did not end after timeoutSeconds")
    check(2.5 < elapsed < 6, f"the watch with timeoutSeconds=3 lasted {elapsed:.1f}s")
    check(headers.get("Transfer-Encoding") == "chunked", f"watch response not chunked: {headers}")
    types = [e["type"] for e in events]
    names = {e["object"]["metadata"]["name"] for e in events}
    check(names == {"w-1"}, f"labelSelector not applied to the watch, saw {names}")
    check(types[0] == "ADDED" and types[-1] == "DELETED" and "MODIFIED" in types, f"event types {types}")
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    check(rvs == sorted(rvs) and len(set(rvs)) == len(rvs), f"resourceVersions not increasing: {rvs}")
    check(all(e["object"].get("kind") == "Pod" for e in events), "watch objects lack kind")

    replay: list[dict] = []
    read_watch(sim, f"/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Dwatched"
                    f"&resourceVersion={start_rv}&timeoutSeconds=1", replay, {})
    check([e["type"] for e in replay] == types, f"replay from resourceVersion {start_rv} differs: "
                                                f"{[e['type'] for e in replay]} vs {types}")
    initial: list[dict] = []
    read_watch(sim, "/api/v1/namespaces/default/pods?watch=1&fieldSelector=metadata.name%3Dw-other&timeoutSeconds=1",
               initial, {})
    check(initial and initial[0]["type"] == "ADDED" and initial[0]["object"]["metadata"]["name"] == "w-other",
          f"watch without resourceVersion did not start with ADDED of existing objects: {initial[:1]}")
    sim.http("DELETE", "/api/v1/namespaces/default/pods/w-other")


def test_shutdown_kills_pods(k: Kubectl, sim: Simulator) -> None:
    marker = marker_seconds()
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("long", ["/bin/sh", "-c", f"sleep {marker} & wait"])))
    wait_until(lambda: len(processes_with(f"sleep {marker}")) >= 2, 5, "the long pod's processes")
    rc = sim.stop(signal.SIGTERM)
    check(rc == 0, f"simulator exited {rc} on SIGTERM")
    wait_until(lambda: not processes_with(marker), 3, f"pod processes to die: {processes_with(marker)}")


def test_sigkill_leaves_no_orphans(workdir: str, kubectl: str, verbose: bool) -> None:
    sim = Simulator(workdir, "sim-kill")
    sim.start()
    k = Kubectl(kubectl, sim, workdir, verbose)
    marker = marker_seconds()
    k.run("create", "-f", "-", stdin=json.dumps(pod_json("long", ["/bin/sh", "-c", f"sleep {marker} & wait"])))
    wait_until(lambda: len(processes_with(f"sleep {marker}")) >= 2, 5, "the long pod's processes")
    sim.stop(signal.SIGKILL)
    wait_until(lambda: not processes_with(marker), 3, f"orphans after SIGKILL: {processes_with(marker)}")


# --------------------------------------------------------------------------- main

TESTS = [test_discovery, test_job_runs_and_completes, test_foreground_delete_waits_for_pods, test_missing_image,
         test_node_selector, test_backoff_limit, test_secret_env, test_owned_secret_goes_with_its_job,
         test_config_error_is_retried, test_error_statuses, test_http_watch,
         test_shutdown_kills_pods]


def run_test(name: str, fn: Callable[[], None], results: list[tuple[str, str | None]]) -> None:
    t0 = time.monotonic()
    try:
        fn()
    except Mismatch as e:
        results.append((name, str(e)))
    except Exception:
        results.append((name, traceback.format_exc()))
    else:
        results.append((name, None))
    status = "ok  " if results[-1][1] is None else "FAIL"
    print(f"{status} {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    if results[-1][1] is not None:
        print("     " + results[-1][1].replace("\n", "\n     "), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubectl", default="kubectl", help="kubectl binary to test with")
    parser.add_argument("--verbose", action="store_true", help="print every kubectl command and its output")
    args = parser.parse_args()
    t0 = time.monotonic()
    results: list[tuple[str, str | None]] = []
    with tempfile.TemporaryDirectory(prefix="k8s-sim-test-") as workdir:
        sim = Simulator(workdir)
        try:
            sim.start()
        except Mismatch as e:
            print(f"FAIL cannot start the simulator: {e}")
            return 1
        k = Kubectl(args.kubectl, sim, workdir, args.verbose)
        try:
            try:
                client = k.run("version", "--client").stdout.strip().splitlines()[0]
            except (Mismatch, OSError) as e:
                print(f"FAIL cannot run kubectl {args.kubectl!r}: {e}")
                return 1
            print(f"simulator at {sim.url}; {client}", flush=True)
            for test in TESTS:
                run_test(test.__name__, lambda: test(k, sim), results)
        finally:
            rc = sim.stop()
            if any(err for _, err in results):
                print(f"--- simulator stderr (last lines):\n{sim.stderr_tail()}")
        if rc != 0:
            results.append(("simulator_exit_code", f"simulator exited {rc}"))
        run_test("test_sigkill_leaves_no_orphans",
                 lambda: test_sigkill_leaves_no_orphans(workdir, args.kubectl, args.verbose), results)
    failed = [name for name, err in results if err]
    print(f"total time {time.monotonic() - t0:.1f}s")
    print(f"fidelity: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
