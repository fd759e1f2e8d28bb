#!/usr/bin/env python3
"""k8s-sim: a small, single-process Kubernetes API server with a Job controller
and a node agent that runs each pod's first container as a local process.

Standard library only (Python >= 3.11). See README.md next to this file.

Usage:
    python3 k8s_sim.py --port 0 --kubeconfig PATH [--node-labels k=v,...]

Design notes:
  * Everything runs on one asyncio event loop.  The object store is only touched
    from that loop and all its methods are synchronous, so every store operation
    is atomic with respect to the other coroutines; no lock is needed.
  * Stored objects are never mutated in place: writers copy, modify and put back.
    Watch events can therefore share the stored dicts safely.
  * Controllers (garbage collector, Job controller, node agent) subscribe to the
    store's event stream exactly like a watch does and react to each event.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import ctypes
import dataclasses
import datetime as dt
import http
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import urllib.parse
import uuid
from typing import Any, AsyncIterator, Callable, Iterable

NODE_NAME = "sim-node"
NODE_IP = "127.0.0.1"
POD_IP = "127.0.0.1"
MISSING_IMAGE_PREFIX = "missing/"
IMAGE_PULL_BACKOFF_DELAY = 1.0      # seconds from ErrImagePull to ImagePullBackOff
CONFIG_RETRY_DELAY = 1.0            # seconds between tries of a CreateContainerConfigError container
SHUTDOWN_KILL_DELAY = 2.0           # SIGTERM -> SIGKILL delay when the simulator stops
BOOKMARK_INTERVAL = 30.0            # seconds between BOOKMARK events (allowWatchBookmarks)
HISTORY_SIZE = 20000                # watch events kept for resourceVersion replays
NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"   # same alphabet as the apiserver
SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-k8s-sim",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc",
    "platform": "linux/amd64",
}

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_VERBS = ("get", "list", "watch")


def log(msg: str) -> None:
    print(f"k8s-sim: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- time


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(t: dt.datetime | None = None) -> str:
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> dt.datetime | None:
    if not s:
        return None
    try:
        return dt.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Like k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d < 365 * 8 else f"{d // 365}y"


def age(obj: dict) -> str:
    created = parse_time(obj.get("metadata", {}).get("creationTimestamp"))
    return human_duration((now() - created).total_seconds()) if created else "<unknown>"


# --------------------------------------------------------------------------- resource types


@dataclasses.dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """`jobs.batch` style name, also used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


NAMESPACES = ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",),
                          ("create", "delete", "get", "list", "patch", "update", "watch"), ("status",))
NODES = ResourceType("", "v1", "Node", "nodes", False, ("no",), READ_VERBS, ("status",))
PODS = ResourceType("", "v1", "Pod", "pods", True, ("po",), ALL_VERBS, ("status", "log"), ("all",))
SECRETS = ResourceType("", "v1", "Secret", "secrets", True)
CONFIGMAPS = ResourceType("", "v1", "ConfigMap", "configmaps", True, ("cm",))
EVENTS = ResourceType("", "v1", "Event", "events", True, ("ev",))
JOBS = ResourceType("batch", "v1", "Job", "jobs", True, (), ALL_VERBS, ("status",), ("all",))

ALL_TYPES = (NAMESPACES, NODES, PODS, SECRETS, CONFIGMAPS, EVENTS, JOBS)
RESOURCES = {(rt.group, rt.version, rt.plural): rt for rt in ALL_TYPES}
GROUP_VERSIONS = {"": ["v1"], "batch": ["v1"]}
NAMESPACED_TYPES = tuple(rt for rt in ALL_TYPES if rt.namespaced)

# Field selectors the real apiserver accepts, per resource (metadata.* always).
FIELD_SELECTORS = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "secrets": {"type"},
    "jobs.batch": {"status.successful"},
    "namespaces": {"status.phase"},
    "nodes": {"spec.unschedulable"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
}


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as a metav1.Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            st["details"] = self.details
        return st


def _details(rt: ResourceType | None, name: str | None, kind: str | None = None, **extra) -> dict:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if rt and rt.group:
        d["group"] = rt.group
    if kind or rt:
        d["kind"] = kind or rt.plural
    d.update(extra)
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.key} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.key} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.key} "{name}": {why}',
                    _details(rt, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(403, "Forbidden", f'{rt.key} "{name}" is forbidden: {why}', _details(rt, name))


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def resource_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


@dataclasses.dataclass
class FieldError:
    type: str            # Required | Invalid | NotSupported | Duplicate | Forbidden
    field: str
    detail: Any = ""
    value: Any = None

    def cause_reason(self) -> str:
        return {"Forbidden": "FieldValueForbidden"}.get(self.type, f"FieldValue{self.type}")

    def message(self) -> str:
        if self.type == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.type == "NotSupported":
            supported = ", ".join(json.dumps(v) for v in self.detail)
            return f"Unsupported value: {json.dumps(self.value)}: supported values: {supported}"
        if self.type == "Duplicate":
            return f"Duplicate value: {json.dumps(self.value)}"
        if self.type == "Forbidden":
            return f"Forbidden: {self.detail}"
        return f"Invalid value: {json.dumps(self.value)}: {self.detail}"


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    texts = [f"{e.field}: {e.message()}" for e in errors]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [{"reason": e.cause_reason(), "message": e.message(), "field": e.field} for e in errors]
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {summary}',
                    _details(rt, name, kind=rt.kind, causes=causes))


# --------------------------------------------------------------------------- selectors

_LABEL_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[-A-Za-z0-9_.]*)|\s(?P<setop>in|notin)\s*\((?P<set>[^)]*)\)"
    r"|(?P<cmp>[<>])\s*(?P<num>-?\d+))?\s*$")


def _split_top_level(expr: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def _label_requirement(text: str) -> Callable[[dict], bool]:
    m = _LABEL_REQ.match(text)
    if not m or (m.group("neg") and (m.group("op") or m.group("setop") or m.group("cmp"))):
        raise bad_request(f"unable to parse requirement: found '{text.strip()}', expected: valid label selector")
    key = m.group("key")
    if m.group("neg"):
        return lambda labels: key not in labels
    if m.group("op"):
        val, positive = m.group("val"), m.group("op") != "!="
        return lambda labels: (labels.get(key) == val) == positive
    if m.group("setop"):
        values = {v.strip() for v in m.group("set").split(",") if v.strip()}
        if m.group("setop") == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m.group("cmp"):
        bound, greater = int(m.group("num")), m.group("cmp") == ">"

        def compare(labels: dict) -> bool:
            try:
                v = int(labels.get(key, ""))
            except ValueError:
                return False
            return v > bound if greater else v < bound
        return compare
    return lambda labels: key in labels


def parse_label_selector(expr: str | None) -> Callable[[dict], bool]:
    reqs = [_label_requirement(p) for p in _split_top_level(expr or "")]
    return lambda labels: all(r(labels or {}) for r in reqs)


def field_value(obj: dict, path: str) -> str:
    if path == "status.successful":
        return str(obj.get("status", {}).get("succeeded", 0))
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if path == "spec.hostNetwork" and cur is None:
        cur = False
    if path == "spec.unschedulable" and cur is None:
        cur = False
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict) and path == "source":
        cur = cur.get("component")
    return "" if cur is None else str(cur)


def parse_field_selector(rt: ResourceType, expr: str | None) -> Callable[[dict], bool]:
    reqs: list[tuple[str, str, bool]] = []
    for part in (p for p in (expr or "").split(",") if p.strip()):
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{expr}'; can't understand '{part}'")
        path, op, val = m.groups()
        allowed = FIELD_SELECTORS.get(rt.key, set()) | {"metadata.name", "metadata.namespace"}
        if path not in allowed:
            raise bad_request(f'field label not supported: {path}')
        reqs.append((path, val, op != "!="))
    return lambda obj: all((field_value(obj, p) == v) == pos for p, v, pos in reqs)


def node_selector_term_matches(term: dict, labels: dict) -> bool:
    for expr in term.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present, val = key in labels, labels.get(key)
        if op == "In" and val not in values:
            return False
        if op == "NotIn" and val in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op in ("Gt", "Lt"):
            try:
                ok = int(val) > int(values[0]) if op == "Gt" else int(val) < int(values[0])
            except (TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                return False
    return True


def pod_fits_node(pod: dict, labels: dict) -> bool:
    spec = pod.get("spec", {})
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(node_selector_term_matches(t, labels) for t in terms)


# --------------------------------------------------------------------------- store


@dataclasses.dataclass(frozen=True)
class Event:
    type: str                # ADDED | MODIFIED | DELETED
    rv: int
    rt: ResourceType
    obj: dict
    old: dict | None = None


def obj_key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


class Store:
    """Objects, the global resourceVersion counter and the event history.

    Only used from the event-loop thread; every method is synchronous."""

    def __init__(self, history_size: int = HISTORY_SIZE):
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict]] = {rt.key: {} for rt in ALL_TYPES}
        self._history: collections.deque[Event] = collections.deque(maxlen=history_size)
        self._compacted_rv = 0
        self._subscribers: set[asyncio.Queue] = set()

    @property
    def rv(self) -> int:
        return self._rv

    @property
    def compacted_rv(self) -> int:
        return self._compacted_rv

    def peek(self, rt: ResourceType, ns: str | None, name: str) -> dict | None:
        """The stored object itself: read only."""
        return self._objects[rt.key].get((ns or "", name))

    def get(self, rt: ResourceType, ns: str | None, name: str) -> dict | None:
        obj = self.peek(rt, ns, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, rt: ResourceType, ns: str | None = None) -> list[dict]:
        items = self._objects[rt.key]
        return [items[k] for k in sorted(items) if ns is None or k[0] == ns]

    def all_objects(self) -> Iterable[tuple[ResourceType, dict]]:
        for rt in ALL_TYPES:
            for obj in list(self._objects[rt.key].values()):
                yield rt, obj

    def find_uid(self, uid: str) -> tuple[ResourceType, dict] | None:
        for rt, obj in self.all_objects():
            if obj["metadata"].get("uid") == uid:
                return rt, obj
        return None

    def dependents(self, uid: str) -> list[tuple[ResourceType, dict]]:
        return [(rt, obj) for rt, obj in self.all_objects()
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])]

    def insert(self, rt: ResourceType, obj: dict) -> dict:
        ns, name = obj_key(obj)
        if (ns, name) in self._objects[rt.key]:
            raise already_exists(rt, name)
        obj = self._stamp(obj)
        self._objects[rt.key][(ns, name)] = obj
        self._emit(Event("ADDED", self._rv, rt, obj))
        return obj

    def replace(self, rt: ResourceType, obj: dict) -> dict:
        key = obj_key(obj)
        old = self._objects[rt.key].get(key)
        if old is None:
            raise not_found(rt, key[1])
        obj = self._stamp(obj)
        self._objects[rt.key][key] = obj
        self._emit(Event("MODIFIED", self._rv, rt, obj, old))
        return obj

    def remove(self, rt: ResourceType, ns: str | None, name: str) -> dict:
        old = self._objects[rt.key].pop((ns or "", name), None)
        if old is None:
            raise not_found(rt, name)
        obj = self._stamp(old)
        self._emit(Event("DELETED", self._rv, rt, obj, old))
        return obj

    def events_since(self, rv: int) -> list[Event]:
        return [e for e in self._history if e.rv > rv]

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def _stamp(self, obj: dict) -> dict:
        """A private copy with the next resourceVersion, keys ordered like the apiserver's."""
        obj = copy.deepcopy(obj)
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        ordered = {k: obj[k] for k in ("kind", "apiVersion", "metadata") if k in obj}
        ordered.update((k, v) for k, v in obj.items() if k not in ordered)
        return ordered

    def _emit(self, ev: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(ev)
        for q in self._subscribers:
            q.put_nowait(ev)


# --------------------------------------------------------------------------- validation and defaults

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                 "'-' or '.', and must start and end with an alphanumeric character")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
             "and must start and end with an alphanumeric character")


def validate_name(name: str, errs: list[FieldError], label: bool = False, max_len: int = 253) -> None:
    pattern, msg = (DNS_LABEL, LABEL_MSG) if label else (DNS_SUBDOMAIN, SUBDOMAIN_MSG)
    if not pattern.match(name):
        errs.append(FieldError("Invalid", "metadata.name", msg, name))
    elif len(name) > max_len:
        errs.append(FieldError("Invalid", "metadata.name", f"must be no more than {max_len} characters", name))


def validate_string_map(meta: dict, field: str) -> None:
    value = meta.get(field)
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_request(f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field} "
                          f"of type map[string]string")


def validate_labels(labels: dict | None, path: str, errs: list[FieldError]) -> None:
    for k, v in (labels or {}).items():
        prefix, _, name = k.rpartition("/")
        if not LABEL_NAME.match(name) or len(name) > 63 or (prefix and not DNS_SUBDOMAIN.match(prefix)):
            errs.append(FieldError("Invalid", f"{path}", "name part must consist of alphanumeric characters, "
                                   "'-', '_' or '.', and must start and end with an alphanumeric character", k))
        if not LABEL_VALUE.match(v) or len(v) > 63:
            errs.append(FieldError("Invalid", f"{path}", "a valid label must be an empty string or consist of "
                                   "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                                   "alphanumeric character", v))


def default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        image = str(c.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        c.setdefault("imagePullPolicy", "IfNotPresent" if tagged or "@" in image else "Always")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})


def validate_pod_spec(spec: Any, path: str, errs: list[FieldError],
                      restart_policies: tuple[str, ...] = ("Always", "OnFailure", "Never")) -> None:
    if not isinstance(spec, dict):
        errs.append(FieldError("Required", path))
        return
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        errs.append(FieldError("Required", f"{path}.containers"))
        containers = []
    names: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            errs.append(FieldError("Invalid", cp, "must be an object", c))
            continue
        name = c.get("name")
        if not name:
            errs.append(FieldError("Required", f"{cp}.name"))
        elif not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
            errs.append(FieldError("Invalid", f"{cp}.name", LABEL_MSG, name))
        elif name in names:
            errs.append(FieldError("Duplicate", f"{cp}.name", value=name))
        else:
            names.add(name)
        if not c.get("image"):
            errs.append(FieldError("Required", f"{cp}.image"))
        for field in ("command", "args"):
            v = c.get(field)
            if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
                raise bad_request(f"json: cannot unmarshal into Go struct field Container.{cp}.{field} of type string")
        for j, e in enumerate(c.get("env") or []):
            if not isinstance(e, dict) or not e.get("name"):
                errs.append(FieldError("Required", f"{cp}.env[{j}].name"))
    rp = spec.get("restartPolicy")
    if rp not in restart_policies:
        errs.append(FieldError("NotSupported", f"{path}.restartPolicy", list(restart_policies), rp))
    ns = spec.get("nodeSelector")
    if ns is not None and (not isinstance(ns, dict) or not all(isinstance(v, str) for v in ns.values())):
        errs.append(FieldError("Invalid", f"{path}.nodeSelector", "must be a map of strings", ns))


def prepare_pod(obj: dict, is_create: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    validate_name(obj["metadata"]["name"], errs)
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        default_pod_spec(spec)
    validate_pod_spec(spec, "spec", errs)
    if is_create:
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    return errs


def job_selector_labels(name: str, uid: str) -> dict:
    return {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
            "controller-uid": uid, "job-name": name}


def prepare_job(obj: dict, is_create: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    meta = obj["metadata"]
    validate_name(meta["name"], errs, max_len=63)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return errs + [FieldError("Required", "spec")]
    if is_create:
        if spec.get("selector") is not None and not spec.get("manualSelector"):
            errs.append(FieldError("Invalid", "spec.selector", "`selector` will be auto-generated",
                                   spec["selector"]))
        if "completions" not in spec and "parallelism" not in spec:
            spec["completions"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
            template = spec.setdefault("template", {})
            tmeta = template.setdefault("metadata", {}) if isinstance(template, dict) else {}
            tmeta.setdefault("labels", {}).update(job_selector_labels(meta["name"], meta["uid"]))
        if not meta.get("labels"):
            meta["labels"] = dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})
        obj["status"] = {}
    for field in ("parallelism", "completions", "backoffLimit"):
        v = spec.get(field)
        if v is not None and (not isinstance(v, int) or v < 0):
            errs.append(FieldError("Invalid", f"spec.{field}", "must be greater than or equal to 0", v))
    for field in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        v = spec.get(field)
        if v is not None and (not isinstance(v, int) or v < (1 if field == "activeDeadlineSeconds" else 0)):
            errs.append(FieldError("Invalid", f"spec.{field}", "must be greater than or equal to 0", v))
    template = spec.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return errs + [FieldError("Required", "spec.template.spec")]
    default_pod_spec(template["spec"])
    validate_pod_spec(template["spec"], "spec.template.spec", errs, ("OnFailure", "Never"))
    return errs


def prepare_secret(obj: dict, is_create: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    validate_name(obj["metadata"]["name"], errs)
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise bad_request("json: cannot unmarshal into Go struct field Secret.data of type map[string][]uint8")
    for k, v in data.items():
        if not CONFIG_KEY.match(k):
            errs.append(FieldError("Invalid", f"data[{k}]", "a valid config key must consist of alphanumeric "
                                   "characters, '-', '_' or '.'", k))
        try:
            base64.b64decode(str(v), validate=True)
        except ValueError:
            raise bad_request(f"illegal base64 data in Secret data[{k}]") from None
    for k, v in (obj.pop("stringData", None) or {}).items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return errs


def prepare_configmap(obj: dict, is_create: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    validate_name(obj["metadata"]["name"], errs)
    for k in (obj.get("data") or {}):
        if not CONFIG_KEY.match(k):
            errs.append(FieldError("Invalid", f"data[{k}]", "a valid config key must consist of alphanumeric "
                                   "characters, '-', '_' or '.'", k))
    return errs


def prepare_namespace(obj: dict, is_create: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    name = obj["metadata"]["name"]
    validate_name(name, errs, label=True, max_len=63)
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    if is_create:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    return errs


def prepare_event(obj: dict, is_create: bool) -> list[FieldError]:
    return []


PREPARERS: dict[str, Callable[[dict, bool], list[FieldError]]] = {
    PODS.key: prepare_pod, JOBS.key: prepare_job, SECRETS.key: prepare_secret,
    CONFIGMAPS.key: prepare_configmap, NAMESPACES.key: prepare_namespace, EVENTS.key: prepare_event,
}


def immutable_changes(rt: ResourceType, old: dict, new: dict) -> list[FieldError]:
    """The few immutability rules a client is likely to trip over."""
    errs = []
    if rt is PODS:
        def strip_images(spec: dict) -> dict:
            spec = copy.deepcopy(spec)
            for c in spec.get("containers") or []:
                c.pop("image", None)
            return spec
        if strip_images(old.get("spec", {})) != strip_images(new.get("spec", {})):
            errs.append(FieldError("Forbidden", "spec", "pod updates may not change fields other than "
                                   "`spec.containers[*].image`, `spec.activeDeadlineSeconds` or "
                                   "`spec.tolerations` (only additions to existing tolerations)"))
    if rt is JOBS:
        for field in ("template", "selector", "completionMode"):
            if old.get("spec", {}).get(field) != new.get("spec", {}).get(field):
                errs.append(FieldError("Invalid", f"spec.{field}", "field is immutable",
                                       new.get("spec", {}).get(field)))
    return errs


# --------------------------------------------------------------------------- patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer: {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, tokens: list[str]) -> Any:
    for t in tokens:
        if isinstance(doc, list):
            doc = doc[int(t)]
        else:
            doc = doc[t]
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            kind, tokens = op.get("op"), _pointer(op.get("path", ""))
            if kind in ("move", "copy"):
                value = copy.deepcopy(_resolve(doc, _pointer(op["from"])))
                if kind == "move":
                    doc = _json_patch_remove(doc, _pointer(op["from"]))
                doc = _json_patch_add(doc, tokens, value, replace=False)
            elif kind == "test":
                if _resolve(doc, tokens) != op.get("value"):
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                   f"request: test failed at {op.get('path')}")
            elif kind == "remove":
                doc = _json_patch_remove(doc, tokens)
            elif kind in ("add", "replace"):
                doc = _json_patch_add(doc, tokens, copy.deepcopy(op.get("value")), replace=kind == "replace")
            else:
                raise bad_request(f"unknown json patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")
    return doc


def _json_patch_add(doc: Any, tokens: list[str], value: Any, replace: bool) -> Any:
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last)
        if replace:
            parent[idx] = value
        else:
            parent.insert(idx, value)
    else:
        if replace and last not in parent:
            raise KeyError(last)
        parent[last] = value
    return doc


def _json_patch_remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc


# --------------------------------------------------------------------------- protobuf request bodies
# kubectl's typed clients (`kubectl create secret|configmap|namespace`) send
# application/vnd.kubernetes.protobuf bodies.  This decodes just those kinds.

# field number -> (json name, type); a type is "string", "bool", "int", "bytes64"
# (bytes shown base64 like JSON does), a schema dict, or ("repeated"|"map", type).
PB_OWNER_REF = {1: ("kind", "string"), 2: ("name", "string"), 3: ("uid", "string"), 5: ("apiVersion", "string"),
                6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
PB_OBJECT_META = {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
                  5: ("uid", "string"), 6: ("resourceVersion", "string"),
                  11: ("labels", ("map", "string")), 12: ("annotations", ("map", "string")),
                  13: ("ownerReferences", ("repeated", PB_OWNER_REF)), 14: ("finalizers", ("repeated", "string"))}
PB_SCHEMAS = {
    "Secret": {1: ("metadata", PB_OBJECT_META), 2: ("data", ("map", "bytes64")), 3: ("type", "string"),
               4: ("stringData", ("map", "string")), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", PB_OBJECT_META), 2: ("data", ("map", "string")),
                  3: ("binaryData", ("map", "bytes64")), 4: ("immutable", "bool")},
    "Namespace": {1: ("metadata", PB_OBJECT_META), 2: ("spec", {1: ("finalizers", ("repeated", "string"))})},
}
PB_UNKNOWN = {1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}), 2: ("raw", "raw")}


def _pb_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _pb_fields(data: bytes) -> Iterable[tuple[int, int, Any]]:
    pos = 0
    while pos < len(data):
        key, pos = _pb_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _pb_varint(data, pos)
        elif wire == 2:
            length, pos = _pb_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _pb_scalar(kind: Any, value: Any) -> Any:
    if isinstance(kind, dict):
        return pb_decode(value, kind)
    if kind == "string":
        return value.decode()
    if kind == "bytes64":
        return base64.b64encode(value).decode()
    if kind == "bool":
        return bool(value)
    return value


def pb_decode(data: bytes, schema: dict) -> dict:
    out: dict[str, Any] = {}
    for number, _, value in _pb_fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if isinstance(kind, tuple) and kind[0] == "repeated":
            out.setdefault(name, []).append(_pb_scalar(kind[1], value))
        elif isinstance(kind, tuple) and kind[0] == "map":
            entry = dict((n, v) for n, _, v in _pb_fields(value))
            out.setdefault(name, {})[entry.get(1, b"").decode()] = _pb_scalar(kind[1], entry.get(2, b""))
        elif kind != "string" or value:      # gogo-proto writes empty optional strings too
            out[name] = _pb_scalar(kind, value)
    return out


def decode_protobuf_body(body: bytes) -> dict:
    if not body.startswith(b"k8s\x00"):
        raise bad_request("protobuf body without the k8s envelope")
    envelope = pb_decode(body[4:], PB_UNKNOWN)
    type_meta = envelope.get("typeMeta", {})
    schema = PB_SCHEMAS.get(type_meta.get("kind", ""))
    if schema is None:
        raise ApiError(415, "UnsupportedMediaType", f"k8s-sim decodes protobuf only for "
                       f"{', '.join(PB_SCHEMAS)}; send {type_meta.get('kind')} as application/json")
    obj = pb_decode(envelope.get("raw", b""), schema)
    obj["kind"], obj["apiVersion"] = type_meta.get("kind"), type_meta.get("apiVersion")
    return obj


# --------------------------------------------------------------------------- tables (kubectl get)


def _col(name: str, type_: str = "string", fmt: str = "", priority: int = 0, desc: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": desc or name, "priority": priority}


TABLE_COLUMNS = {
    PODS.key: [_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts"), _col("Age"),
               _col("IP", priority=1), _col("Node", priority=1), _col("Nominated Node", priority=1),
               _col("Readiness Gates", priority=1)],
    JOBS.key: [_col("Name", fmt="name"), _col("Status"), _col("Completions"), _col("Duration"), _col("Age"),
               _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
    SECRETS.key: [_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")],
    CONFIGMAPS.key: [_col("Name", fmt="name"), _col("Data", "integer"), _col("Age")],
    NAMESPACES.key: [_col("Name", fmt="name"), _col("Status"), _col("Age")],
    NODES.key: [_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
                _col("Internal-IP", priority=1)],
    EVENTS.key: [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")],
}
DEFAULT_COLUMNS = [_col("Name", fmt="name"), _col("Created At", fmt="date")]


def pod_display_status(pod: dict) -> str:
    """A simplified copy of kubectl's printPod STATUS column."""
    st = pod.get("status", {})
    reason = st.get("reason") or st.get("phase") or "Pending"
    has_running = False
    for cs in reversed(st.get("containerStatuses") or []):
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated", {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode', 0)}"
        elif "running" in state and cs.get("ready"):
            has_running = True
    if reason == "Completed" and has_running:
        reason = "Running"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def job_display_status(job: dict) -> str:
    conds = {c.get("type") for c in job.get("status", {}).get("conditions") or [] if c.get("status") == "True"}
    for ctype in ("Complete", "Failed"):
        if ctype in conds:
            return ctype
    if job["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for ctype in ("FailureTarget", "SuccessCriteriaMet"):
        if ctype in conds:
            return ctype
    return "Suspended" if job.get("spec", {}).get("suspend") else "Running"


def job_cells(job: dict) -> list:
    spec, st = job.get("spec", {}), job.get("status", {})
    succeeded = st.get("succeeded", 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    else:
        par = spec.get("parallelism", 1)
        completions = f"{succeeded}/1 of {par}" if par > 1 else f"{succeeded}/1"
    start, end = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    duration = human_duration(((end or now()) - start).total_seconds()) if start else ""
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).get("matchLabels", {}).items())
    return [job["metadata"]["name"], job_display_status(job), completions, duration, age(job),
            ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            selector]


def pod_cells(pod: dict) -> list:
    st, spec = pod.get("status", {}), pod.get("spec", {})
    statuses = st.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(cs.get("restartCount", 0) for cs in statuses)
    return [pod["metadata"]["name"], f"{ready}/{len(spec.get('containers') or [])}", pod_display_status(pod),
            str(restarts), age(pod), st.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
            "<none>", "<none>"]


def table_cells(rt: ResourceType, obj: dict) -> list:
    name = obj["metadata"]["name"]
    if rt is PODS:
        return pod_cells(obj)
    if rt is JOBS:
        return job_cells(obj)
    if rt is SECRETS:
        return [name, obj.get("type", "Opaque"), len(obj.get("data") or {}), age(obj)]
    if rt is CONFIGMAPS:
        return [name, len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age(obj)]
    if rt is NAMESPACES:
        return [name, obj.get("status", {}).get("phase", "Active"), age(obj)]
    if rt is NODES:
        return [name, "Ready", "<none>", age(obj), obj["status"]["nodeInfo"]["kubeletVersion"], NODE_IP]
    if rt is EVENTS:
        inv = obj.get("involvedObject", {})
        last = parse_time(obj.get("lastTimestamp"))
        return [human_duration((now() - last).total_seconds()) if last else "<unknown>", obj.get("type", ""),
                obj.get("reason", ""), f"{inv.get('kind', '').lower()}/{inv.get('name', '')}", obj.get("message", "")]
    return [name, obj["metadata"].get("creationTimestamp", "")]


def partial_metadata(obj: dict, api_version: str = "meta.k8s.io/v1") -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata", {})}


def to_table(rt: ResourceType, objs: list[dict], rv: str, api_version: str, include: str) -> dict:
    rows = []
    for obj in objs:
        row: dict[str, Any] = {"cells": table_cells(rt, obj)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = partial_metadata(obj, api_version)
        rows.append(row)
    return {"kind": "Table", "apiVersion": api_version, "metadata": {"resourceVersion": rv},
            "columnDefinitions": TABLE_COLUMNS.get(rt.key, DEFAULT_COLUMNS), "rows": rows}


@dataclasses.dataclass(frozen=True)
class Rendering:
    """What representation the client asked for in its Accept header."""
    as_kind: str | None = None          # None | Table | PartialObjectMetadata | PartialObjectMetadataList
    api_version: str = "meta.k8s.io/v1"
    include_object: str = "Metadata"

    @staticmethod
    def from_request(accept: str, query: dict) -> "Rendering":
        for part in (accept or "").split(","):
            media, *params = [p.strip() for p in part.split(";")]
            if media not in ("application/json", "*/*", "application/*"):
                continue
            p = dict(x.split("=", 1) for x in params if "=" in x)
            if "as" not in p:
                return Rendering()
            if p.get("g") == "meta.k8s.io" and p["as"] in ("Table", "PartialObjectMetadata",
                                                            "PartialObjectMetadataList"):
                return Rendering(p["as"], f"meta.k8s.io/{p.get('v', 'v1')}", query.get("includeObject", "Metadata"))
        return Rendering()

    def one(self, rt: ResourceType, obj: dict, rv: str) -> dict:
        if self.as_kind == "Table":
            return to_table(rt, [obj], rv, self.api_version, self.include_object)
        if self.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return partial_metadata(obj, self.api_version)
        return obj

    def many(self, rt: ResourceType, objs: list[dict], meta: dict) -> dict:
        if self.as_kind == "Table":
            table = to_table(rt, objs, meta["resourceVersion"], self.api_version, self.include_object)
            table["metadata"] = meta
            return table
        if self.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return {"kind": "PartialObjectMetadataList", "apiVersion": self.api_version, "metadata": meta,
                    "items": [partial_metadata(o, self.api_version) for o in objs]}
        # The real apiserver omits kind/apiVersion on list items.
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in objs]
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}


# --------------------------------------------------------------------------- API semantics


@dataclasses.dataclass
class DeleteOptions:
    propagation: str | None = None
    grace: int | None = None
    preconditions: dict = dataclasses.field(default_factory=dict)
    dry_run: bool = False


PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")


def parse_delete_options(query: dict, body: dict) -> DeleteOptions:
    if body and body.get("kind") not in (None, "DeleteOptions"):
        raise bad_request(f"expected DeleteOptions, got {body.get('kind')}")
    policy = query.get("propagationPolicy") or body.get("propagationPolicy")
    orphan = query.get("orphanDependents", body.get("orphanDependents"))
    if policy is None and orphan is not None:
        policy = "Orphan" if str(orphan).lower() in ("true", "1") else "Foreground"
    if policy is not None and policy not in PROPAGATION_POLICIES:
        raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                       f'value: "{policy}": supported values: "Foreground", "Background", "Orphan"')
    grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
    try:
        grace = int(grace) if grace is not None else None
    except ValueError:
        raise bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
    dry_run = bool(query.get("dryRun") or body.get("dryRun"))
    return DeleteOptions(policy, grace, body.get("preconditions") or {}, dry_run)


def success_status(rt: ResourceType, obj: dict) -> dict:
    meta = obj["metadata"]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": _details(rt, meta["name"], uid=meta.get("uid"))}


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(NAME_SUFFIX_ALPHABET) for _ in range(n))


def int_param(query: dict, name: str) -> int | None:
    v = query.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise bad_request(f"invalid value for {name}: {v!r}") from None


class Api:
    """The apiserver's semantics on top of the Store (validation, defaulting,
    deletion with finalizers, watches).  Controllers call it too."""

    def __init__(self, store: Store):
        self.store = store

    # ---- reads

    def get(self, rt: ResourceType, ns: str | None, name: str) -> dict:
        obj = self.store.peek(rt, ns, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, ns: str | None, query: dict) -> tuple[list[dict], dict]:
        label_ok = parse_label_selector(query.get("labelSelector"))
        field_ok = parse_field_selector(rt, query.get("fieldSelector"))
        items = [o for o in self.store.list(rt, ns)
                 if label_ok(o["metadata"].get("labels")) and field_ok(o)]
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        start = query.get("continue")
        if start:
            try:
                token = json.loads(base64.b64decode(start))
                after = tuple(token["after"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid") from None
            items = [o for o in items if obj_key(o) > after]
        limit = int_param(query, "limit")
        if limit and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            token = {"after": list(obj_key(items[-1])), "rv": self.store.rv}
            meta["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = rest
        return items, meta

    # ---- writes

    def create(self, rt: ResourceType, ns: str | None, body: Any, dry_run: bool = False) -> dict:
        obj = self._check_body(rt, body)
        meta = obj["metadata"]
        meta["namespace"] = self._creation_namespace(rt, ns, meta)
        if not rt.namespaced:
            meta.pop("namespace", None)
        for field in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "creationTimestamp", "generation", "managedFields", "selfLink"):
            meta.pop(field, None)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if rt is JOBS:
            meta["generation"] = 1
        generate = not meta.get("name")
        if generate and not meta.get("generateName"):
            raise invalid(rt, "", [FieldError("Required", "metadata.name", "name or generateName is required")])
        for _ in range(10):
            if generate:
                base = meta["generateName"][:58]
                meta["name"] = base + random_suffix()
            candidate = copy.deepcopy(obj)
            self._prepare(rt, candidate, is_create=True)
            if dry_run:
                return candidate
            try:
                return self.store.insert(rt, candidate)
            except ApiError as e:
                if not (generate and e.code == 409):
                    raise
        raise already_exists(rt, meta["name"])

    def replace(self, rt: ResourceType, ns: str | None, name: str, body: Any, subresource: str | None,
                dry_run: bool = False) -> dict:
        cur = self.get(rt, ns, name)
        new = self._check_body(rt, body)
        if new["metadata"].get("name") not in (None, name):
            raise bad_request(f"the name of the object ({new['metadata']['name']}) does not match the name on "
                              f"the URL ({name})")
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                           "version and try again")
        return self._update(rt, cur, new, subresource, dry_run)

    def patch(self, rt: ResourceType, ns: str | None, name: str, body: bytes, content_type: str,
              subresource: str | None, query: dict) -> tuple[int, dict]:
        ctype = content_type.split(";")[0].strip()
        dry_run = bool(query.get("dryRun"))
        if ctype == "application/apply-patch+yaml":
            return self._apply(rt, ns, name, body, subresource, query, dry_run)
        patch = parse_json(body)
        cur = self.get(rt, ns, name)
        if ctype == "application/json-patch+json":
            new = json_patch(cur, patch)
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise bad_request("merge patch must be a JSON object")
            new = merge_patch(cur, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/json-patch+json, "
                           "application/merge-patch+json, application/apply-patch+yaml")
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                           "version and try again")
        return 200, self._update(rt, cur, new, subresource, dry_run)

    def _apply(self, rt: ResourceType, ns: str | None, name: str, body: bytes, subresource: str | None,
               query: dict, dry_run: bool) -> tuple[int, dict]:
        """Server-side apply, approximated as 'create or JSON merge patch'."""
        if not query.get("fieldManager"):
            raise bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is "
                              "required for apply patch")
        patch = parse_json_or_yaml(body)
        if not isinstance(patch, dict):
            raise bad_request("apply patch must be an object")
        cur = self.store.peek(rt, ns, name)
        if cur is None:
            if subresource:
                raise not_found(rt, name)
            patch.setdefault("metadata", {})["name"] = name
            return 201, self.create(rt, ns, patch, dry_run)
        return 200, self._update(rt, cur, merge_patch(cur, patch), subresource, dry_run)

    def _update(self, rt: ResourceType, cur: dict, new: Any, subresource: str | None, dry_run: bool) -> dict:
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise bad_request("object must be a JSON object with metadata")
        cur_meta = cur["metadata"]
        if subresource == "status":
            result = copy.deepcopy(cur)
            result["status"] = copy.deepcopy(new.get("status") or {})
        else:
            result = copy.deepcopy(new)
            meta = result.setdefault("metadata", {})
            validate_string_map(meta, "labels")
            validate_string_map(meta, "annotations")
            for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                          "namespace", "name", "generation"):
                if field in cur_meta:
                    meta[field] = cur_meta[field]
                else:
                    meta.pop(field, None)
            result["kind"], result["apiVersion"] = rt.kind, rt.api_version
            if rt.has_status:
                result["status"] = copy.deepcopy(cur.get("status", {}))
            errs = self._prepare(rt, result, is_create=False, raise_errors=False)
            errs += immutable_changes(rt, cur, result)
            if errs:
                raise invalid(rt, cur_meta["name"], errs)
            if "generation" in cur_meta and result.get("spec") != cur.get("spec"):
                meta["generation"] = cur_meta["generation"] + 1
        result["metadata"]["resourceVersion"] = cur_meta["resourceVersion"]
        if result == cur or dry_run:
            return result
        stored = self.store.replace(rt, result)
        return self.remove_if_unblocked(rt, stored) or stored

    def _prepare(self, rt: ResourceType, obj: dict, is_create: bool, raise_errors: bool = True) -> list:
        meta = obj["metadata"]
        validate_string_map(meta, "labels")
        validate_string_map(meta, "annotations")
        errs: list[FieldError] = []
        validate_labels(meta.get("labels"), "metadata.labels", errs)
        preparer = PREPARERS.get(rt.key)
        if preparer is None:
            raise method_not_allowed()
        errs += preparer(obj, is_create)
        if errs and raise_errors:
            raise invalid(rt, meta.get("name", ""), errs)
        return errs

    def _check_body(self, rt: ResourceType, body: Any) -> dict:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        if body.get("kind") not in (None, "", rt.kind):
            raise bad_request(f"the kind in the data ({body.get('kind')}) does not match the expected kind "
                              f"({rt.kind})")
        if body.get("apiVersion") not in (None, "", rt.api_version):
            raise bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match the "
                              f"expected API version ({rt.api_version})")
        obj = copy.deepcopy(body)
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        return obj

    def _creation_namespace(self, rt: ResourceType, ns: str | None, meta: dict) -> str | None:
        if not rt.namespaced:
            return None
        body_ns = meta.get("namespace")
        if ns is None:
            raise method_not_allowed()
        if body_ns and body_ns != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        nsobj = self.store.peek(NAMESPACES, None, ns)
        if nsobj is None:
            raise not_found(NAMESPACES, ns)
        if nsobj["metadata"].get("deletionTimestamp"):
            raise forbidden(rt, meta.get("name") or meta.get("generateName") or "",
                            f"unable to create new content in namespace {ns} because it is being terminated")
        return ns

    # ---- deletion

    def delete(self, rt: ResourceType, ns: str | None, name: str, opts: DeleteOptions) -> dict:
        obj = self.get(rt, ns, name)
        meta = obj["metadata"]
        pre = opts.preconditions
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                           f"meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: {meta['resourceVersion']}")
        if opts.dry_run:
            return obj
        if rt is NAMESPACES:
            return self._delete_namespace(obj)
        if meta.get("deletionTimestamp"):
            if rt is PODS and opts.grace == 0 and not meta.get("finalizers"):
                return self.store.remove(rt, ns, name)
            return obj
        policy = opts.propagation or ("Orphan" if rt is JOBS else "Background")   # batch/v1 Job default
        if rt is PODS:
            return self._delete_pod(obj, opts, policy)
        return self._delete_with_finalizers(rt, obj, policy, grace=0)

    def _delete_with_finalizers(self, rt: ResourceType, obj: dict, policy: str, grace: int) -> dict:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        ns, name = obj_key(obj)
        if not finalizers and grace == 0:
            removed = self.store.remove(rt, ns, name)
            return removed if rt is PODS else success_status(rt, removed)
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = rfc3339(now() + dt.timedelta(seconds=grace))
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
        if new["metadata"].get("generation") is not None:
            new["metadata"]["generation"] += 1
        return self.store.replace(rt, new)

    def _delete_pod(self, pod: dict, opts: DeleteOptions, policy: str) -> dict:
        spec, phase = pod.get("spec", {}), pod.get("status", {}).get("phase")
        grace = opts.grace if opts.grace is not None and opts.grace >= 0 else spec.get(
            "terminationGracePeriodSeconds", 30)
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            grace = 0
        return self._delete_with_finalizers(PODS, pod, policy, grace)

    def _delete_namespace(self, nsobj: dict) -> dict:
        name = nsobj["metadata"]["name"]
        if name in ("default", "kube-system", "kube-public"):
            raise forbidden(NAMESPACES, name, "this namespace may not be deleted")
        if nsobj["metadata"].get("deletionTimestamp"):
            return nsobj
        new = copy.deepcopy(nsobj)
        new["metadata"]["deletionTimestamp"] = rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["status"] = {"phase": "Terminating"}
        stored = self.store.replace(NAMESPACES, new)
        for rt in NAMESPACED_TYPES:
            for obj in list(self.store.list(rt, name)):
                try:
                    self.delete(rt, name, obj["metadata"]["name"], DeleteOptions(propagation="Background"))
                except ApiError:
                    pass
        return self.remove_namespace_if_empty(name) or stored

    def delete_collection(self, rt: ResourceType, ns: str | None, query: dict, opts: DeleteOptions) -> dict:
        items, _ = self.list(rt, ns, query)
        for obj in list(items):
            try:
                self.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], opts)
            except ApiError as e:
                if e.code != 404:
                    raise
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)}, "items": []}

    def remove_if_unblocked(self, rt: ResourceType, obj: dict) -> dict | None:
        """Remove an object that is being deleted once nothing blocks it any more."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return None
        if rt is PODS and obj.get("spec", {}).get("nodeName") and \
                obj.get("status", {}).get("phase") not in ("Succeeded", "Failed") and \
                meta.get("deletionGracePeriodSeconds", 0) > 0:
            return None   # the node agent removes it once the process is gone
        if rt is NAMESPACES:
            return self.remove_namespace_if_empty(meta["name"])
        ns, name = obj_key(obj)
        return self.store.remove(rt, ns, name)

    def remove_namespace_if_empty(self, name: str) -> dict | None:
        nsobj = self.store.peek(NAMESPACES, None, name)
        if nsobj is None or not nsobj["metadata"].get("deletionTimestamp"):
            return None
        if any(self.store.list(rt, name) for rt in NAMESPACED_TYPES):
            return None
        return self.store.remove(NAMESPACES, None, name)

    # ---- events (core/v1 Event objects)

    def record_event(self, rt: ResourceType, obj: dict, etype: str, reason: str, message: str,
                     component: str) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        nsobj = self.store.peek(NAMESPACES, None, ns)
        if nsobj is None or nsobj["metadata"].get("deletionTimestamp"):
            return
        t = rfc3339()
        event = {
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns,
                         "uid": str(uuid.uuid4()), "creationTimestamp": t},
            "involvedObject": {"kind": rt.kind, "namespace": ns, "name": meta["name"], "uid": meta.get("uid"),
                               "apiVersion": rt.api_version, "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": etype,
            "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
            "firstTimestamp": t, "lastTimestamp": t, "count": 1, "eventTime": None,
            "reportingComponent": component, "reportingInstance": NODE_NAME if component == "kubelet" else "",
        }
        self.store.insert(EVENTS, event)

    # ---- watch

    def watch(self, rt: ResourceType, ns: str | None, query: dict,
              render: Callable[[str, dict], bytes]) -> AsyncIterator[bytes]:
        label_ok = parse_label_selector(query.get("labelSelector"))
        field_ok = parse_field_selector(rt, query.get("fieldSelector"))

        def matches(obj: dict | None) -> bool:
            return (obj is not None and (ns is None or obj["metadata"].get("namespace") == ns)
                    and label_ok(obj["metadata"].get("labels")) and field_ok(obj))

        timeout = int_param(query, "timeoutSeconds")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        send_initial = query.get("sendInitialEvents") == "true"
        rv_param = query.get("resourceVersion", "")
        queue = self.store.subscribe()         # before the snapshot: no event can slip in between
        initial: list[tuple[str, dict]] = []
        if rv_param in ("", "0") or send_initial:
            initial = [("ADDED", o) for o in self.store.list(rt, ns) if matches(o)]
        else:
            try:
                since = int(rv_param)
            except ValueError:
                self.store.unsubscribe(queue)
                raise bad_request(f"resourceVersion: Invalid value: {rv_param!r}") from None
            if since < self.store.compacted_rv:
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({self.store.compacted_rv + 1})")
                initial = [("ERROR", gone.status())]
                timeout = -1
            else:
                initial = [t for t in (watch_transform(e, matches) for e in self.store.events_since(since)
                                       if e.rt is rt) if t]
        if send_initial and bookmarks:
            initial.append(("BOOKMARK", self._bookmark(rt, initial_end=True)))
        return self._watch_stream(rt, queue, initial, matches, timeout, bookmarks, render)

    def _bookmark(self, rt: ResourceType, initial_end: bool = False) -> dict:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}

    async def _watch_stream(self, rt: ResourceType, queue: asyncio.Queue, initial: list[tuple[str, dict]],
                            matches: Callable[[dict | None], bool], timeout: int | None, bookmarks: bool,
                            render: Callable[[str, dict], bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            for etype, obj in initial:
                yield render(etype, obj)
            if timeout is not None and timeout < 0:
                return
            deadline = loop.time() + timeout if timeout else None
            while True:
                wait = BOOKMARK_INTERVAL if bookmarks else None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining) if wait else remaining
                try:
                    ev = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        yield render("BOOKMARK", self._bookmark(rt))
                    continue
                out = watch_transform(ev, matches) if ev.rt is rt else None
                if out:
                    yield render(*out)
        finally:
            self.store.unsubscribe(queue)


def watch_transform(ev: Event, matches: Callable[[dict | None], bool]) -> tuple[str, dict] | None:
    """Map a store event to what a filtered watch sees (objects entering or
    leaving the selection appear as ADDED / DELETED, like the apiserver's cacher)."""
    if ev.type in ("ADDED", "DELETED"):
        return (ev.type, ev.obj) if matches(ev.obj) else None
    now_ok, was_ok = matches(ev.obj), matches(ev.old)
    if now_ok:
        return ("MODIFIED" if was_ok else "ADDED"), ev.obj
    if was_ok:
        old = copy.deepcopy(ev.old)
        old["metadata"]["resourceVersion"] = str(ev.rv)
        return "DELETED", old
    return None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise bad_request(f"couldn't get version/kind; json parse error: {e}") from None


def parse_json_or_yaml(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:
        import yaml  # optional; only needed for YAML server-side apply bodies
    except ImportError:
        raise ApiError(415, "UnsupportedMediaType", "YAML apply bodies need PyYAML in the simulator; "
                       "send JSON") from None
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as e:
        raise bad_request(f"error decoding YAML: {e}") from None


# --------------------------------------------------------------------------- controllers


class Controller:
    """Reacts to every store event, in order, like an informer-based controller."""

    name = "controller"

    def __init__(self, api: Api):
        self.api = api
        self.store = api.store
        self.queue = self.store.subscribe()

    async def run(self) -> None:
        while True:
            ev = await self.queue.get()
            try:
                self.handle(ev)
            except Exception:   # a controller bug must not stop the simulator
                log(f"{self.name} failed on {ev.type} {ev.rt.key} {obj_key(ev.obj)}:\n{traceback.format_exc()}")

    def handle(self, ev: Event) -> None:
        raise NotImplementedError


class GarbageCollector(Controller):
    """ownerReferences cascading (Background / Foreground / Orphan) and namespace cleanup."""

    name = "garbage-collector"

    def handle(self, ev: Event) -> None:
        meta = ev.obj["metadata"]
        if ev.type == "DELETED":
            self._collect_dependents(meta["uid"])
            for ref in meta.get("ownerReferences") or []:
                owner = self.store.find_uid(ref.get("uid"))
                if owner and "foregroundDeletion" in (owner[1]["metadata"].get("finalizers") or []):
                    self._foreground(*owner)
            if ev.rt.namespaced:
                self.api.remove_namespace_if_empty(meta.get("namespace", ""))
        elif meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if "orphan" in finalizers:
                self._orphan(ev.rt, ev.obj)
            elif "foregroundDeletion" in finalizers:
                self._foreground(ev.rt, ev.obj)
        elif meta.get("ownerReferences") and (ev.type == "ADDED" or meta.get("ownerReferences") != (
                (ev.old or {}).get("metadata", {}).get("ownerReferences"))):
            self._collect_if_owners_absent(ev.rt, ev.obj)

    def _collect_dependents(self, uid: str) -> None:
        for rt, dep in self.store.dependents(uid):
            refs = dep["metadata"].get("ownerReferences") or []
            if dep["metadata"].get("deletionTimestamp") or any(self.store.find_uid(r.get("uid")) for r in refs):
                continue
            self._delete(rt, dep, "Background")

    def _collect_if_owners_absent(self, rt: ResourceType, obj: dict) -> None:
        """A dependent whose owners are all gone (made after its owner's deletion) is deleted,
        as the real garbage collector does when it finds only dangling ownerReferences."""
        cur = self.store.peek(rt, *obj_key(obj))
        if cur is None or cur["metadata"].get("uid") != obj["metadata"].get("uid"):
            return
        refs = cur["metadata"].get("ownerReferences") or []
        if refs and not cur["metadata"].get("deletionTimestamp") and \
                not any(self.store.find_uid(r.get("uid")) for r in refs):
            self._delete(rt, cur, "Background")

    def _foreground(self, rt: ResourceType, owner: dict) -> None:
        owner = self.store.peek(rt, *obj_key(owner))
        if owner is None or "foregroundDeletion" not in (owner["metadata"].get("finalizers") or []):
            return
        dependents = self.store.dependents(owner["metadata"]["uid"])
        for drt, dep in dependents:
            if not dep["metadata"].get("deletionTimestamp"):
                self._delete(drt, dep, "Background")
        if not dependents:
            self._drop_finalizer(rt, owner, "foregroundDeletion")

    def _orphan(self, rt: ResourceType, owner: dict) -> None:
        uid = owner["metadata"]["uid"]
        for drt, dep in self.store.dependents(uid):
            new = copy.deepcopy(dep)
            refs = [r for r in new["metadata"].get("ownerReferences", []) if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self.store.replace(drt, new)
        self._drop_finalizer(rt, owner, "orphan")

    def _drop_finalizer(self, rt: ResourceType, obj: dict, finalizer: str) -> None:
        cur = self.store.get(rt, *obj_key(obj))
        if cur is None:
            return
        finalizers = [f for f in cur["metadata"].get("finalizers") or [] if f != finalizer]
        if finalizers:
            cur["metadata"]["finalizers"] = finalizers
        else:
            cur["metadata"].pop("finalizers", None)
        stored = self.store.replace(rt, cur)
        self.api.remove_if_unblocked(rt, stored)

    def _delete(self, rt: ResourceType, obj: dict, policy: str) -> None:
        try:
            self.api.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                            DeleteOptions(propagation=policy))
        except ApiError as e:
            if e.code != 404:
                raise


@dataclasses.dataclass
class JobTrack:
    """What the Job controller remembers about one Job (like the real one's
    tracking finalizers): which pods it has counted as succeeded / failed."""
    succeeded: set[str] = dataclasses.field(default_factory=set)
    failed: set[str] = dataclasses.field(default_factory=set)
    timers: dict[str, asyncio.TimerHandle] = dataclasses.field(default_factory=dict)


def condition(ctype: str, reason: str, message: str) -> dict:
    t = rfc3339()
    return {"type": ctype, "status": "True", "lastProbeTime": t, "lastTransitionTime": t,
            "reason": reason, "message": message}


def controller_owner(obj: dict, kind: str) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return ref
    return None


def pod_is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


class JobController(Controller):
    name = "job-controller"

    def __init__(self, api: Api):
        super().__init__(api)
        self.tracks: dict[str, JobTrack] = {}

    def handle(self, ev: Event) -> None:
        if ev.rt is JOBS:
            if ev.type == "DELETED":
                self._forget(ev.obj["metadata"]["uid"])
            else:
                self.reconcile(*obj_key(ev.obj))
        elif ev.rt is PODS:
            self._observe_pod(ev)

    def _observe_pod(self, ev: Event) -> None:
        ref = controller_owner(ev.obj, "Job")
        if ref is None:
            return
        ns = ev.obj["metadata"].get("namespace", "")
        job = self.store.peek(JOBS, ns, ref.get("name", ""))
        if job is None or job["metadata"]["uid"] != ref.get("uid"):
            return
        track = self.tracks.setdefault(ref["uid"], JobTrack())
        uid, phase = ev.obj["metadata"]["uid"], ev.obj.get("status", {}).get("phase")
        if phase == "Succeeded":
            track.succeeded.add(uid)
        elif phase == "Failed":
            track.failed.add(uid)
        elif ev.type == "DELETED" and not job_finished(job) and not job["metadata"].get("deletionTimestamp"):
            track.failed.add(uid)       # a pod deleted while running counts as failed
        self.reconcile(ns, ref["name"])

    def _forget(self, uid: str) -> None:
        track = self.tracks.pop(uid, None)
        for timer in (track.timers.values() if track else ()):
            timer.cancel()

    def reconcile(self, ns: str, name: str) -> None:
        job = self.store.peek(JOBS, ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        uid, spec = job["metadata"]["uid"], job["spec"]
        track = self.tracks.setdefault(uid, JobTrack())
        if job_finished(job):
            self._schedule_ttl(job, track)
            return
        pods = [p for p in self.store.list(PODS, ns) if (controller_owner(p, "Job") or {}).get("uid") == uid]
        for p in pods:
            phase = p.get("status", {}).get("phase")
            if phase == "Succeeded":
                track.succeeded.add(p["metadata"]["uid"])
            elif phase == "Failed":
                track.failed.add(p["metadata"]["uid"])
        active = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]
        status = copy.deepcopy(job.get("status", {}))
        status.setdefault("startTime", rfc3339())
        succeeded = len(track.succeeded)
        restarts = sum(cs.get("restartCount", 0) for p in active for cs in p.get("status", {}).get(
            "containerStatuses") or [])
        outcome = self._outcome(job, status, succeeded, len(track.failed) + restarts, len(active))
        if outcome:
            self._finish(job, status, outcome, active)
        elif not spec.get("suspend"):
            active += self._create_missing_pods(job, succeeded, len(active))
        self._schedule_deadline(job, track, status)
        self._write_status(job, status, pods, active, succeeded, len(track.failed))

    def _outcome(self, job: dict, status: dict, succeeded: int, failures: int, active: int) -> tuple | None:
        spec = job["spec"]
        start = parse_time(status["startTime"])
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and start and (now() - start).total_seconds() >= deadline:
            return "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
        if failures > spec.get("backoffLimit", 6):
            return "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        completions = spec.get("completions")
        if (completions is not None and succeeded >= completions) or \
                (completions is None and succeeded > 0 and active == 0):
            return "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
        return None

    def _finish(self, job: dict, status: dict, outcome: tuple, active: list[dict]) -> None:
        ctype, reason, message = outcome
        interim = "SuccessCriteriaMet" if ctype == "Complete" else "FailureTarget"
        status["conditions"] = (status.get("conditions") or []) + [condition(interim, reason, message),
                                                                     condition(ctype, reason, message)]
        if ctype == "Complete":
            status["completionTime"] = rfc3339()
        for pod in active:
            try:
                self.api.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], DeleteOptions())
            except ApiError:
                pass
        active.clear()
        etype = "Normal" if ctype == "Complete" else "Warning"
        self.api.record_event(JOBS, job, etype, "Completed" if ctype == "Complete" else reason,
                              "Job completed" if ctype == "Complete" else message, self.name)

    def _create_missing_pods(self, job: dict, succeeded: int, active: int) -> list[dict]:
        spec = job["spec"]
        parallelism, completions = spec.get("parallelism", 1), spec.get("completions")
        if completions is not None:
            wanted = min(parallelism, completions - succeeded)
        else:
            wanted = parallelism if succeeded == 0 else 0
        created = []
        for _ in range(max(0, wanted - active)):
            try:
                pod = self.api.create(PODS, job["metadata"]["namespace"], self._pod_from_template(job))
            except ApiError as e:
                log(f"job {obj_key(job)}: cannot create pod: {e.message}")
                self.api.record_event(JOBS, job, "Warning", "FailedCreate", f"Error creating: {e.message}",
                                      self.name)
                break
            self.api.record_event(JOBS, job, "Normal", "SuccessfulCreate",
                                  f"Created pod: {pod['metadata']['name']}", self.name)
            created.append(pod)
        return created

    @staticmethod
    def _pod_from_template(job: dict) -> dict:
        meta, template = job["metadata"], copy.deepcopy(job["spec"]["template"])
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels.update(job_selector_labels(meta["name"], meta["uid"]))
        pod_meta: dict[str, Any] = {
            "generateName": f"{meta['name']}-", "labels": labels,
            "ownerReferences": [{"apiVersion": JOBS.api_version, "kind": "Job", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = tmeta["annotations"]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec", {})}

    def _write_status(self, job: dict, status: dict, pods: list[dict], active: list[dict],
                      succeeded: int, failed: int) -> None:
        for field, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[field] = value
            else:
                status.pop(field, None)
        status["ready"] = sum(1 for p in active if pod_is_ready(p))
        status["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp")
                                    and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"))
        status["uncountedTerminatedPods"] = {}
        cur = self.store.peek(JOBS, *obj_key(job))
        if cur is not None and cur.get("status") != status:
            new = copy.deepcopy(cur)
            new["status"] = status
            self.store.replace(JOBS, new)

    def _schedule_deadline(self, job: dict, track: JobTrack, status: dict) -> None:
        deadline, start = job["spec"].get("activeDeadlineSeconds"), parse_time(status.get("startTime"))
        if deadline is None or start is None or "deadline" in track.timers:
            return
        delay = max(0.0, deadline - (now() - start).total_seconds()) + 0.05
        track.timers["deadline"] = asyncio.get_running_loop().call_later(
            delay, self.reconcile, *obj_key(job))

    def _schedule_ttl(self, job: dict, track: JobTrack) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None or "ttl" in track.timers:
            return
        finished = max((parse_time(c.get("lastTransitionTime")) for c in job["status"].get("conditions", [])
                        if c.get("type") in ("Complete", "Failed")), default=None) or now()
        delay = max(0.0, ttl - (now() - finished).total_seconds())
        track.timers["ttl"] = asyncio.get_running_loop().call_later(delay, self._expire, job["metadata"]["uid"],
                                                                    *obj_key(job))

    def _expire(self, uid: str, ns: str, name: str) -> None:
        job = self.store.peek(JOBS, ns, name)
        if job is not None and job["metadata"]["uid"] == uid:
            try:
                self.api.delete(JOBS, ns, name, DeleteOptions(propagation="Foreground"))
            except ApiError as e:
                log(f"ttl deletion of job {ns}/{name} failed: {e.message}")


def job_finished(job: dict) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in job.get("status", {}).get("conditions") or [])


# --------------------------------------------------------------------------- node agent

_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def child_setup(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: die with the simulator (PR_SET_PDEATHSIG), even if it is SIGKILLed."""
    def setup() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:     # the simulator died before prctl took effect
            os._exit(1)
    return setup


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


GUARD_CODE = r"""
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    op, _, pgid = line.strip().partition(" ")
    if op == "+":
        groups.add(int(pgid))
    elif op == "-":
        groups.discard(int(pgid))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
if len(sys.argv) > 1:
    shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class OrphanGuard:
    """A helper process that outlives the simulator only to SIGKILL the pod
    process groups it was told about (and remove the temporary log directory),
    should the simulator die without cleaning up (even by SIGKILL: the pipe
    then reaches EOF).  PR_SET_PDEATHSIG alone only reaches the direct children,
    not e.g. `sleep` under `sh -c`."""

    def __init__(self, temp_dir: str | None) -> None:
        argv = [sys.executable, "-c", GUARD_CODE] + ([temp_dir] if temp_dir else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True)

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(f"{line}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def add(self, pgid: int) -> None:
        self._send(f"+ {pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def close(self) -> None:
        """Clean shutdown: EOF makes the guard SIGKILL whatever is still registered, then exit."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ConfigError(Exception):
    """A container cannot be configured (CreateContainerConfigError)."""


CONFIG_ERROR = {"reason": "CreateContainerConfigError"}   # what _run_container returns for one


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion in command, args and env values ($$ escapes)."""
    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(repl, text)


@dataclasses.dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    log_path: str
    state: str = "idle"            # idle | starting | running
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task | None = None
    killing: bool = False
    config_error: str | None = None   # the last CreateContainerConfigError, while it lasts


class NodeAgent(Controller):
    """Scheduler + kubelet for the single node `sim-node`."""

    name = "kubelet"

    def __init__(self, api: Api, node_labels: dict[str, str], log_dir: str, inherit_env: bool, port: int,
                 guard: OrphanGuard | None = None):
        super().__init__(api)
        self.guard = guard
        self.node_labels, self.log_dir = node_labels, log_dir
        self.inherit_env, self.port = inherit_env, port
        self.runs: dict[str, PodRun] = {}
        self.live: dict[int, asyncio.subprocess.Process] = {}     # process group id -> its leader
        self.seen: set[str] = set()
        self.stopping = False

    # ---- node object

    def node_object(self) -> dict:
        t = rfc3339()
        cpus = str(os.cpu_count() or 1)
        return {
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": NODE_NAME, "uid": str(uuid.uuid4()), "creationTimestamp": t,
                         "labels": dict(self.node_labels)},
            "spec": {},
            "status": {
                "capacity": {"cpu": cpus, "memory": "16Gi", "pods": "110"},
                "allocatable": {"cpu": cpus, "memory": "16Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": t,
                                "lastTransitionTime": t, "reason": "KubeletReady",
                                "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_NAME}],
                "nodeInfo": {"kubeletVersion": SERVER_VERSION["gitVersion"], "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "k8s-sim://1",
                             "kernelVersion": os.uname().release, "osImage": "local processes",
                             "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
            },
        }

    # ---- events

    def handle(self, ev: Event) -> None:
        if ev.rt is not PODS:
            return
        pod, uid = ev.obj, ev.obj["metadata"]["uid"]
        if ev.type == "DELETED":
            self._on_deleted(uid)
            return
        if pod.get("spec", {}).get("nodeName") not in (None, "", NODE_NAME):
            return
        if pod["metadata"].get("deletionTimestamp"):
            self._on_terminating(pod)
            return
        if uid not in self.seen and not self.stopping:
            self.seen.add(uid)
            self._admit(pod)

    def _admit(self, pod: dict) -> None:
        if not pod["spec"].get("nodeName"):
            if not pod_fits_node(pod, self.node_labels):
                self._mark_unschedulable(pod)
                return
            self._bind(pod)
        meta = pod["metadata"]
        run = PodRun(meta["uid"], meta["namespace"], meta["name"],
                     os.path.join(self.log_dir, f"{meta['namespace']}_{meta['name']}_{meta['uid']}.log"))
        self.runs[run.uid] = run
        run.task = asyncio.create_task(self._run_pod(run))

    def _mark_unschedulable(self, pod: dict) -> None:
        message = ("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: "
                   "0/1 nodes are available: 1 Preemption is not helpful for scheduling.")
        new = copy.deepcopy(pod)
        new["status"] = {"phase": "Pending", "qosClass": "BestEffort", "conditions": [
            {"type": "PodScheduled", "status": "False", "lastProbeTime": None, "lastTransitionTime": rfc3339(),
             "reason": "Unschedulable", "message": message}]}
        stored = self.store.replace(PODS, new)
        self.api.record_event(PODS, stored, "Warning", "FailedScheduling", message, "default-scheduler")

    def _bind(self, pod: dict) -> None:
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = NODE_NAME
        new["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                        "lastTransitionTime": rfc3339()}]
        stored = self.store.replace(PODS, new)
        meta = stored["metadata"]
        self.api.record_event(PODS, stored, "Normal", "Scheduled",
                              f"Successfully assigned {meta['namespace']}/{meta['name']} to {NODE_NAME}",
                              "default-scheduler")

    def _on_terminating(self, pod: dict) -> None:
        run = self.runs.get(pod["metadata"]["uid"])
        if run and run.state == "starting":
            return                      # _run_container checks for deletion right after the spawn
        if run and run.state == "running" and run.proc and run.proc.returncode is None:
            if not run.killing:
                run.killing = True
                grace = pod["metadata"].get("deletionGracePeriodSeconds") or 0
                self.api.record_event(PODS, pod, "Normal", "Killing",
                                      f"Stopping container {pod['spec']['containers'][0]['name']}", self.name)
                asyncio.create_task(self._kill(run, grace))
            return
        if run and run.task and not run.task.done():
            run.task.cancel()
        self._finalize_deletion(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"])

    def _on_deleted(self, uid: str) -> None:
        self.seen.discard(uid)
        run = self.runs.pop(uid, None)
        if run is None:
            return
        if run.proc and run.proc.returncode is None:
            signal_group(run.proc.pid, signal.SIGKILL)       # force deletion
        elif run.task and not run.task.done() and run.state == "idle":
            run.task.cancel()

    def _finalize_deletion(self, ns: str, name: str, uid: str) -> None:
        pod = self.store.peek(PODS, ns, name)
        if pod is None or pod["metadata"]["uid"] != uid or not pod["metadata"].get("deletionTimestamp"):
            return
        if not pod["metadata"].get("finalizers"):
            self.store.remove(PODS, ns, name)

    async def _kill(self, run: PodRun, grace: float) -> None:
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return
        signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)

    # ---- running a pod

    async def _run_pod(self, run: PodRun) -> None:
        try:
            pod = self._update_status(run, self._creating_status)
            if pod is None:
                return
            container = pod["spec"]["containers"][0]
            if str(container.get("image", "")).startswith(MISSING_IMAGE_PREFIX):
                await self._image_pull_failure(run, container)
                return
            await self._run_until_done(run, container)
        except asyncio.CancelledError:
            pass
        except Exception:
            log(f"kubelet failed running pod {run.namespace}/{run.name}:\n{traceback.format_exc()}")
        finally:
            run.state = "idle"
            if not self.stopping:
                self._finalize_deletion(run.namespace, run.name, run.uid)

    async def _run_until_done(self, run: PodRun, container: dict) -> None:
        restarts = 0
        while True:
            result = await self._run_container(run, container, restarts)
            if result is CONFIG_ERROR:      # could not be configured: Waiting, tried again (the
                await asyncio.sleep(CONFIG_RETRY_DELAY)  # kubelet's pod worker does so every ~10 s)
                pod = self.store.peek(PODS, run.namespace, run.name)
                if pod is None or pod["metadata"]["uid"] != run.uid or self.stopping or \
                        pod["metadata"].get("deletionTimestamp"):
                    return
                continue
            if result is None:
                return
            pod = self.store.peek(PODS, run.namespace, run.name)
            if pod is None or pod["metadata"]["uid"] != run.uid or self.stopping:
                return
            policy = pod["spec"].get("restartPolicy", "Always")
            restart = policy == "Always" or (policy == "OnFailure" and result["exitCode"] != 0)
            if restart and not pod["metadata"].get("deletionTimestamp"):
                restarts += 1
                self._update_status(run, lambda p: self._backoff_status(p, container, result, restarts))
                await asyncio.sleep(min(2 ** (restarts - 1), 10))
                continue
            self._update_status(run, lambda p: self._terminated_status(p, container, result, restarts))
            return

    async def _run_container(self, run: PodRun, container: dict, restarts: int) -> dict | None:
        pod = self.store.get(PODS, run.namespace, run.name)
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return None
        try:
            env = self._container_env(pod, container)
        except ConfigError as e:
            message = str(e)
            if message != run.config_error:     # a retry that fails the same way changes nothing
                run.config_error = message
                self._update_status(run, lambda p: self._waiting_status(p, container, "CreateContainerConfigError",
                                                                        message, restarts))
                self.api.record_event(PODS, pod, "Warning", "Failed", f"Error: {message}", self.name)
            return CONFIG_ERROR
        run.config_error = None
        argv = [expand_vars(a, env) for a in (container.get("command") or []) + (container.get("args") or [])]
        started = rfc3339()
        run.state = "starting"
        try:
            proc = await self._spawn(argv, env, container.get("workingDir") or os.getcwd(), run.log_path)
        except OSError as e:
            run.state = "idle"
            message = f"failed to create containerd task: exec: {argv[0] if argv else ''!r}: {e.strerror or e}"
            self.api.record_event(PODS, pod, "Warning", "Failed", f"Error: {message}", self.name)
            return {"exitCode": 128, "reason": "StartError", "message": message, "startedAt": started,
                    "finishedAt": rfc3339(), "containerID": "sim://none"}
        except ValueError as e:    # no command at all
            run.state = "idle"
            return {"exitCode": 128, "reason": "StartError", "message": str(e), "startedAt": started,
                    "finishedAt": rfc3339(), "containerID": "sim://none"}
        run.proc, run.state, run.killing = proc, "running", False
        self.live[proc.pid] = proc
        if self.guard:
            self.guard.add(proc.pid)
        cid = f"sim://{proc.pid}"
        current = self._update_status(run, lambda p: self._running_status(p, container, started, cid, restarts))
        if current is None or self.stopping:
            signal_group(proc.pid, signal.SIGKILL)
        elif current["metadata"].get("deletionTimestamp"):
            self._on_terminating(current)
        else:
            self.api.record_event(PODS, current, "Normal", "Started", f"Started container {container['name']}",
                                  self.name)
        rc = await proc.wait()
        signal_group(proc.pid, signal.SIGKILL)      # leftovers of the container's process group
        self.live.pop(proc.pid, None)
        if self.guard:
            self.guard.remove(proc.pid)
        run.state, run.proc = "idle", None
        result = {"exitCode": rc if rc >= 0 else 128 - rc, "startedAt": started, "finishedAt": rfc3339(),
                  "containerID": cid, "reason": "Completed" if rc == 0 else "Error"}
        if rc < 0:
            result["signal"] = -rc
        return result

    async def _spawn(self, argv: list[str], env: dict[str, str], cwd: str,
                     log_path: str) -> asyncio.subprocess.Process:
        if not argv:
            raise ValueError("container has no command: the simulator cannot run image entrypoints")
        with open(log_path, "ab") as logf:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=asyncio.subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True, preexec_fn=child_setup(os.getpid()))

    async def _image_pull_failure(self, run: PodRun, container: dict) -> None:
        image = container.get("image", "")
        message = (f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
                   f'pull access denied, repository does not exist or may require authorization')
        pod = self._update_status(run, lambda p: self._waiting_status(p, container, "ErrImagePull", message, 0))
        if pod:
            self.api.record_event(PODS, pod, "Warning", "Failed", f"Failed to pull image \"{image}\": {message}",
                                  self.name)
        await asyncio.sleep(IMAGE_PULL_BACKOFF_DELAY)
        backoff = f'Back-off pulling image "{image}"'
        pod = self._update_status(run, lambda p: self._waiting_status(p, container, "ImagePullBackOff", backoff, 0))
        if pod:
            self.api.record_event(PODS, pod, "Normal", "BackOff", backoff, self.name)

    # ---- environment

    def _container_env(self, pod: dict, container: dict) -> dict[str, str]:
        env = dict(os.environ) if self.inherit_env else {
            k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update({"HOSTNAME": pod["metadata"]["name"], "KUBERNETES_SERVICE_HOST": NODE_IP,
                    "KUBERNETES_SERVICE_PORT": str(self.port), "KUBERNETES_PORT": f"tcp://{NODE_IP}:{self.port}"})
        ns = pod["metadata"]["namespace"]
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for key, value in self._env_source(ns, src).items():
                env[prefix + key] = value
        for var in container.get("env") or []:
            value = self._env_value(pod, var, env)
            if value is not None:
                env[var["name"]] = value
        return env

    def _env_source(self, ns: str, src: dict) -> dict[str, str]:
        if "secretRef" in src:
            ref, rt = src["secretRef"], SECRETS
        elif "configMapRef" in src:
            ref, rt = src["configMapRef"], CONFIGMAPS
        else:
            return {}
        obj = self.store.peek(rt, ns, ref.get("name", ""))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f'{rt.kind.lower() if rt is SECRETS else "configmap"} "{ref.get("name")}" not found')
        if rt is SECRETS:
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _env_value(self, pod: dict, var: dict, env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return expand_vars(str(var.get("value", "")), env)
        src, ns = var["valueFrom"], pod["metadata"]["namespace"]
        if "secretKeyRef" in src or "configMapKeyRef" in src:
            is_secret = "secretKeyRef" in src
            ref = src["secretKeyRef" if is_secret else "configMapKeyRef"]
            rt = SECRETS if is_secret else CONFIGMAPS
            obj = self.store.peek(rt, ns, ref.get("name", ""))
            data = (obj or {}).get("data") or {}
            if obj is None or ref.get("key") not in data:
                if ref.get("optional"):
                    return None
                if obj is None:
                    raise ConfigError(f'{"secret" if is_secret else "configmap"} "{ref.get("name")}" not found')
                raise ConfigError(f"couldn't find key {ref.get('key')} in {rt.kind} {ns}/{ref.get('name')}")
            value = data[ref["key"]]
            return base64.b64decode(value).decode(errors="replace") if is_secret else value
        if "fieldRef" in src:
            return self._field_ref(pod, src["fieldRef"].get("fieldPath", ""))
        if "resourceFieldRef" in src:
            return str(os.cpu_count() or 1) if "cpu" in src["resourceFieldRef"].get("resource", "") else "0"
        return ""

    @staticmethod
    def _field_ref(pod: dict, path: str) -> str:
        meta = pod["metadata"]
        m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        values = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                  "metadata.uid": meta["uid"], "spec.nodeName": NODE_NAME,
                  "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                  "status.podIP": POD_IP, "status.podIPs": POD_IP, "status.hostIP": NODE_IP,
                  "status.hostIPs": NODE_IP}
        return values.get(path, "")

    # ---- status

    def _update_status(self, run: PodRun, make: Callable[[dict], dict]) -> dict | None:
        """Write the status computed by make(pod); None if the pod is gone."""
        pod = self.store.get(PODS, run.namespace, run.name)
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return None
        status = make(pod)
        status["conditions"] = merge_conditions(pod.get("status", {}).get("conditions") or [],
                                                status.get("conditions") or [])
        if status == pod.get("status"):
            return pod
        pod["status"] = status
        return self.store.replace(PODS, pod)

    @staticmethod
    def _base_status(pod: dict, phase: str) -> dict:
        old = pod.get("status", {})
        return {"phase": phase, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}], "podIP": POD_IP,
                "podIPs": [{"ip": POD_IP}], "startTime": old.get("startTime") or rfc3339(),
                "qosClass": old.get("qosClass", "BestEffort")}

    @staticmethod
    def _conditions(*, ready: bool, sandbox: bool = True, reason: str | None = None,
                    message: str | None = None) -> list[dict]:
        def cond(ctype: str, ok: bool) -> dict:
            c: dict[str, Any] = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None,
                                 "lastTransitionTime": rfc3339()}
            if not ok and ctype in ("Ready", "ContainersReady") and reason:
                c["reason"] = reason
                if message:
                    c["message"] = message
            return c
        return [cond("PodReadyToStartContainers", sandbox), cond("Initialized", True), cond("Ready", ready),
                cond("ContainersReady", ready), cond("PodScheduled", True)]

    @staticmethod
    def _container_status(pod: dict, container: dict, state: dict, *, ready: bool = False, started: bool = False,
                          restarts: int = 0, last: dict | None = None, cid: str | None = None) -> list[dict]:
        cs: dict[str, Any] = {"name": container["name"], "image": container.get("image", ""),
                              "imageID": "" if str(container.get("image", "")).startswith(MISSING_IMAGE_PREFIX)
                              else f"sim://{container.get('image', '')}",
                              "ready": ready, "started": started, "restartCount": restarts, "state": state,
                              "lastState": last or {}}
        if cid:
            cs["containerID"] = cid
        statuses = [cs]
        for other in pod["spec"]["containers"][1:]:   # only the first container runs
            statuses.append({"name": other["name"], "image": other.get("image", ""), "imageID": "", "ready": False,
                             "started": False, "restartCount": 0, "lastState": {},
                             "state": {"waiting": {"reason": "NotSupported",
                                                   "message": "k8s-sim only runs the first container"}}})
        return statuses

    def _not_ready(self, pod: dict) -> tuple[str, str]:
        names = " ".join(c["name"] for c in pod["spec"]["containers"])
        return "ContainersNotReady", f"containers with unready status: [{names}]"

    def _creating_status(self, pod: dict) -> dict:
        container = pod["spec"]["containers"][0]
        st = self._base_status(pod, "Pending")
        why, msg = self._not_ready(pod)
        st["conditions"] = self._conditions(ready=False, reason=why, message=msg)
        st["containerStatuses"] = self._container_status(pod, container, {"waiting": {"reason": "ContainerCreating"}})
        return st

    def _waiting_status(self, pod: dict, container: dict, reason: str, message: str, restarts: int) -> dict:
        st = self._base_status(pod, "Pending" if restarts == 0 else "Running")
        why, msg = self._not_ready(pod)
        st["conditions"] = self._conditions(ready=False, reason=why, message=msg)
        st["containerStatuses"] = self._container_status(
            pod, container, {"waiting": {"reason": reason, "message": message}}, restarts=restarts)
        return st

    def _running_status(self, pod: dict, container: dict, started: str, cid: str, restarts: int) -> dict:
        st = self._base_status(pod, "Running")
        st["conditions"] = self._conditions(ready=True)
        last = (pod.get("status", {}).get("containerStatuses") or [{}])[0].get("lastState") if restarts else None
        st["containerStatuses"] = self._container_status(pod, container, {"running": {"startedAt": started}},
                                                         ready=True, started=True, restarts=restarts, last=last,
                                                         cid=cid)
        return st

    def _backoff_status(self, pod: dict, container: dict, result: dict, restarts: int) -> dict:
        st = self._base_status(pod, "Running")
        why, msg = self._not_ready(pod)
        st["conditions"] = self._conditions(ready=False, reason=why, message=msg)
        message = f"back-off restarting failed container {container['name']} in pod {pod['metadata']['name']}"
        st["containerStatuses"] = self._container_status(
            pod, container, {"waiting": {"reason": "CrashLoopBackOff", "message": message}}, restarts=restarts,
            last={"terminated": dict(result)}, cid=result.get("containerID"))
        return st

    def _terminated_status(self, pod: dict, container: dict, result: dict, restarts: int) -> dict:
        st = self._base_status(pod, "Succeeded" if result["exitCode"] == 0 else "Failed")
        st["conditions"] = self._conditions(ready=False, sandbox=False, reason="PodCompleted")
        last = (pod.get("status", {}).get("containerStatuses") or [{}])[0].get("lastState") if restarts else None
        st["containerStatuses"] = self._container_status(pod, container, {"terminated": dict(result)},
                                                         restarts=restarts, last=last,
                                                         cid=result.get("containerID"))
        return st

    # ---- logs

    def log_path(self, pod: dict) -> str | None:
        run = self.runs.get(pod["metadata"]["uid"])
        return run.log_path if run and os.path.exists(run.log_path) else None

    def is_running(self, uid: str) -> bool:
        run = self.runs.get(uid)
        return bool(run and (run.state != "idle" or (run.task and not run.task.done())))

    # ---- shutdown

    async def shutdown(self) -> None:
        """SIGTERM every pod process group, SIGKILL after SHUTDOWN_KILL_DELAY seconds."""
        self.stopping = True
        groups = dict(self.live)
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in groups.values()]
        if waits:
            await asyncio.wait(waits, timeout=SHUTDOWN_KILL_DELAY)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        if waits:
            await asyncio.wait(waits, timeout=SHUTDOWN_KILL_DELAY)
        tasks = [r.task for r in self.runs.values() if r.task and not r.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1)


def merge_conditions(old: list[dict], new: list[dict]) -> list[dict]:
    """Keep lastTransitionTime of conditions whose status did not change."""
    before = {c.get("type"): c for c in old}
    merged = []
    for c in new:
        prev = before.get(c.get("type"))
        if prev and prev.get("status") == c.get("status"):
            c = dict(c, lastTransitionTime=prev.get("lastTransitionTime"))
        merged.append(c)
    return merged


# --------------------------------------------------------------------------- HTTP


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool

    def json_body(self) -> Any:
        """The body as JSON data (protobuf bodies of a few kinds are converted)."""
        if "protobuf" in self.headers.get("content-type", ""):
            try:
                return decode_protobuf_body(self.body)
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                raise bad_request(f"cannot decode protobuf body: {e}") from None
        return parse_json(self.body) if self.body.strip() else {}


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode())


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    line = await reader.readline()
    while line in (b"\r\n", b"\n"):
        line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {line!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    while True:
        h = await reader.readline()
        if not h:
            raise asyncio.IncompleteReadError(b"", None)
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    url = urllib.parse.urlsplit(target)
    query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
    connection = headers.get("connection", "").lower()
    keep_alive = (version == "HTTP/1.1" and connection != "close") or connection == "keep-alive"
    return Request(method.upper(), urllib.parse.unquote(url.path), query, headers, body, keep_alive)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpServer:
    """Minimal HTTP/1.1 server: keep-alive, Content-Length and chunked bodies,
    chunked streaming responses (watch, log follow)."""

    def __init__(self, router: "Router", verbose: bool):
        self.router, self.verbose = router, verbose
        self.stopping = asyncio.Event()
        self.writers: set[asyncio.StreamWriter] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while not self.stopping.is_set():
                req = await read_request(reader, writer)
                if req is None:
                    break
                is_head = req.method == "HEAD"
                resp = await self.router.handle(req)
                if self.verbose:
                    log(f"{req.method} {req.path} {req.query} -> {resp.status}")
                keep = req.keep_alive and not self.stopping.is_set()
                if resp.stream is None:
                    await self._write_full(writer, resp, keep, head_only=is_head)
                else:
                    keep = await self._write_stream(reader, writer, resp, keep)
                if not keep:
                    break
        except (ValueError, asyncio.LimitOverrunError) as e:      # malformed request: answer, then hang up
            body = json.dumps(bad_request(f"malformed HTTP request: {e}").status()).encode()
            resp = Response(400, body)
            try:
                await self._write_full(writer, resp, keep=False)
            except ConnectionError:
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    @staticmethod
    def _headers(resp: Response, keep: bool) -> list[tuple[str, str]]:
        return [("Content-Type", resp.content_type), ("Cache-Control", "no-cache, private"),
                ("Date", http_date()), ("Connection", "keep-alive" if keep else "close"),
                ("Audit-Id", str(uuid.uuid4()))]

    async def _write_full(self, writer: asyncio.StreamWriter, resp: Response, keep: bool,
                          head_only: bool = False) -> None:
        headers = self._headers(resp, keep) + [("Content-Length", str(len(resp.body)))]
        writer.write(response_head(resp.status, headers) + (b"" if head_only else resp.body))
        await writer.drain()

    async def _write_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, resp: Response,
                            keep: bool) -> bool:
        """Send resp.stream as chunks until it ends, the client goes away or we stop.
        Returns whether the connection can be reused."""
        headers = self._headers(resp, keep) + [("Transfer-Encoding", "chunked")]
        writer.write(response_head(resp.status, headers))
        await writer.drain()
        chunks = resp.stream.__aiter__()
        disconnect = asyncio.ensure_future(reader.read(1))
        stopping = asyncio.ensure_future(self.stopping.wait())
        clean, client_gone = False, False
        try:
            while True:
                nxt = asyncio.ensure_future(chunks.__anext__())
                done, _ = await asyncio.wait({nxt, disconnect, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    client_gone = disconnect in done
                    clean = not client_gone
                    break
                try:
                    data = nxt.result()
                except StopAsyncIteration:
                    clean = True
                    break
                if data:
                    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    await writer.drain()
        finally:
            for fut in (disconnect, stopping):
                fut.cancel()
            await asyncio.gather(disconnect, stopping, return_exceptions=True)
            await chunks.aclose()
        if clean:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return clean and keep and not client_gone

    def close_all(self) -> None:
        self.stopping.set()
        for w in list(self.writers):
            w.close()


def http_date() -> str:
    return now().strftime("%a, %d %b %Y %H:%M:%S GMT")


# --------------------------------------------------------------------------- routing


@dataclasses.dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class Router:
    def __init__(self, api: Api, node: NodeAgent):
        self.api, self.node = api, node

    async def handle(self, req: Request) -> Response:
        try:
            return self.dispatch(req)
        except ApiError as e:
            return json_response(e.status(), e.code)
        except Exception:
            log(f"internal error on {req.method} {req.path}:\n{traceback.format_exc()}")
            err = ApiError(500, "InternalError", f"Internal error occurred: {sys.exc_info()[1]}")
            return json_response(err.status(), 500)

    def dispatch(self, req: Request) -> Response:
        if req.method == "HEAD":
            req.method = "GET"
        parts = [p for p in req.path.split("/") if p]
        if req.method != "GET" and (len(parts) < 3 or parts[0] not in ("api", "apis")):
            raise method_not_allowed()
        if not parts:
            return json_response({"paths": ["/api", "/api/v1", "/apis", "/apis/batch", "/apis/batch/v1",
                                            "/healthz", "/livez", "/readyz", "/version", "/openapi/v2"]})
        head = parts[0]
        if head == "version":
            return json_response(SERVER_VERSION)
        if head in ("healthz", "livez", "readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if head == "openapi":
            return self._openapi(req, parts)
        if head == "api":
            if len(parts) == 1:
                return json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{NODE_IP}:{self.node.port}"}]})
            return self._group_version(req, "", parts[1], parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                      "groups": [api_group("batch")]})
            if parts[1] not in GROUP_VERSIONS or parts[1] == "":
                raise resource_not_found()
            if len(parts) == 2:
                return json_response(dict(api_group(parts[1]), kind="APIGroup", apiVersion="v1"))
            return self._group_version(req, parts[1], parts[2], parts[3:])
        raise resource_not_found()

    def _openapi(self, req: Request, parts: list[str]) -> Response:
        if parts[1:] == ["v2"]:
            if "protobuf" in req.headers.get("accept", ""):
                return Response(200, OPENAPI_V2_PROTOBUF, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            return json_response({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
                                  "paths": {}, "definitions": {}})
        raise resource_not_found()

    def _group_version(self, req: Request, group: str, version: str, rest: list[str]) -> Response:
        if version not in GROUP_VERSIONS.get(group, []):
            raise resource_not_found()
        if not rest:
            return json_response(api_resource_list(group, version))
        target = self._target(group, version, rest)
        return self._resource(req, target)

    @staticmethod
    def _target(group: str, version: str, rest: list[str]) -> Target:
        ns = None
        namespace_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not namespace_subresource:
            ns, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise resource_not_found()
        rt = RESOURCES.get((group, version, rest[0]))
        if rt is None or (ns is not None and not rt.namespaced):
            raise resource_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rt.subresources:
            raise resource_not_found()
        return Target(rt, ns, name, sub)

    def _resource(self, req: Request, t: Target) -> Response:
        verb = self._verb(req, t)
        allowed = t.rt.verbs if t.subresource is None else (
            ("get",) if t.subresource == "log" else ("get", "update", "patch"))
        if verb not in allowed:
            raise method_not_allowed()
        rendering = Rendering.from_request(req.headers.get("accept", ""), req.query)
        if verb == "list":
            items, meta = self.api.list(t.rt, t.namespace, req.query)
            return json_response(rendering.many(t.rt, items, meta))
        if verb == "watch":
            return self._watch(req, t, rendering)
        if verb == "get":
            if t.subresource == "log":
                return self._pod_log(req, t)
            obj = self.api.get(t.rt, t.namespace, t.name)
            return json_response(rendering.one(t.rt, obj, str(self.api.store.rv)))
        if verb == "create":
            obj = self.api.create(t.rt, t.namespace, req.json_body(), dry_run=bool(req.query.get("dryRun")))
            return json_response(obj, 201)
        if verb == "update":
            obj = self.api.replace(t.rt, t.namespace, t.name, req.json_body(), t.subresource,
                                   dry_run=bool(req.query.get("dryRun")))
            return json_response(obj)
        if verb == "patch":
            code, obj = self.api.patch(t.rt, t.namespace, t.name, req.body, req.headers.get("content-type", ""),
                                       t.subresource, req.query)
            return json_response(obj, code)
        opts = parse_delete_options(req.query, req.json_body() or {})
        if verb == "delete":
            return json_response(self.api.delete(t.rt, t.namespace, t.name, opts))
        return json_response(self.api.delete_collection(t.rt, t.namespace, req.query, opts))

    @staticmethod
    def _verb(req: Request, t: Target) -> str:
        m = req.method
        watch = req.query.get("watch") in ("1", "true", "True")
        if m == "GET" and watch and t.subresource is None:
            return "watch"
        if t.name is None:
            if m == "GET":
                return "list"
            return {"POST": "create", "DELETE": "deletecollection"}.get(m, "?")
        if t.subresource == "log" and m != "GET":
            return "?"
        return {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            m, "?") if not (t.subresource and m == "DELETE") else "?"

    def _watch(self, req: Request, t: Target, rendering: Rendering) -> Response:
        rt = t.rt
        if t.name:   # legacy single-object watch: treat as metadata.name field selector
            req.query["fieldSelector"] = f"metadata.name={t.name}"

        def render(etype: str, obj: dict) -> bytes:
            if etype in ("ADDED", "MODIFIED", "DELETED"):
                obj = rendering.one(rt, obj, obj["metadata"].get("resourceVersion", ""))
            return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"

        stream = self.api.watch(rt, t.namespace, req.query, render)
        return Response(200, content_type="application/json", stream=stream)

    def _pod_log(self, req: Request, t: Target) -> Response:
        pod = self.api.get(PODS, t.namespace, t.name)
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = req.query.get("container") or containers[0]
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {t.name}")
        path = self.node.log_path(pod) if container == containers[0] else None
        if path is None:
            statuses = pod.get("status", {}).get("containerStatuses") or []
            waiting = next((cs["state"]["waiting"].get("reason") for cs in statuses
                            if cs.get("name") == container and "waiting" in cs.get("state", {})), "ContainerCreating")
            raise bad_request(f'container "{container}" in pod "{t.name}" is waiting to start: {waiting}')
        data = read_log(path, int_param(req.query, "tailLines"), int_param(req.query, "limitBytes"))
        if req.query.get("follow") in ("true", "1"):
            uid = pod["metadata"]["uid"]
            return Response(200, content_type="text/plain", stream=follow_log(path, data, lambda: self.node.is_running(uid)))
        return Response(200, data, "text/plain")


def read_log(path: str, tail_lines: int | None, limit_bytes: int | None) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if tail_lines is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail_lines:]) if tail_lines > 0 else b""
    if limit_bytes is not None:
        data = data[:limit_bytes]
    return data


async def follow_log(path: str, initial: bytes, running: Callable[[], bool]) -> AsyncIterator[bytes]:
    yield initial
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        while True:
            data = f.read(65536)
            if data:
                yield data
                continue
            if not running():
                rest = f.read()
                if rest:
                    yield rest
                return
            await asyncio.sleep(0.2)


def api_group(group: str) -> dict:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in GROUP_VERSIONS[group]]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def api_resource_list(group: str, version: str) -> dict:
    resources = []
    for rt in ALL_TYPES:
        if rt.group != group or rt.version != version:
            continue
        entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                                 "kind": rt.kind, "verbs": list(rt.verbs)}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
            resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                              "kind": rt.kind, "verbs": verbs})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _pb_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (enough for a tiny openapi_v2.Document)."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


# openapi_v2.Document{swagger: "2.0", info: {title: "Kubernetes", version: "v1.32.0"}, paths: {}}:
# no definitions, so kubectl's client-side validation (kubectl < 1.25 without --validate=false) skips checks.
OPENAPI_V2_PROTOBUF = (_pb_field(1, b"2.0") + _pb_field(2, _pb_field(1, b"Kubernetes") + _pb_field(2, b"v1.32.0"))
                       + _pb_field(8, b""))


# --------------------------------------------------------------------------- main


def parse_node_labels(text: str) -> dict[str, str]:
    labels = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"bad node label {item!r}, expected key=value")
        labels[key] = value
    return labels


def write_kubeconfig(path: str, port: int) -> None:
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: k8s-sim
  cluster:
    server: http://{NODE_IP}:{port}
contexts:
- name: k8s-sim
  context:
    cluster: k8s-sim
    namespace: default
    user: k8s-sim
current-context: k8s-sim
users:
- name: k8s-sim
  user:
    token: k8s-sim-any-token
preferences: {{}}
"""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kubeconfig-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def seed(store: Store, node: NodeAgent) -> None:
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        obj = {"kind": "Namespace", "apiVersion": "v1",
               "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": rfc3339(),
                            "labels": {"kubernetes.io/metadata.name": name}},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        store.insert(NAMESPACES, obj)
    store.insert(NODES, node.node_object())


async def serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="k8s-sim-logs-")
    os.makedirs(log_dir, exist_ok=True)
    store = Store()
    api = Api(store)
    guard = OrphanGuard(None if args.log_dir else log_dir)
    node = NodeAgent(api, args.node_labels, log_dir, args.inherit_env, port=0, guard=guard)
    http_server = HttpServer(Router(api, node), args.verbose)
    server = await asyncio.start_server(http_server.serve, NODE_IP, args.port, limit=4 * 1024 * 1024)
    node.port = server.sockets[0].getsockname()[1]
    seed(store, node)
    controllers = [GarbageCollector(api), JobController(api), node]
    tasks = [asyncio.create_task(c.run()) for c in controllers]
    write_kubeconfig(args.kubeconfig, node.port)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    # With a command: announce on stderr (its stdout is the command's), run it against this
    # API, and stop when it ends, exiting with its status (as `mpirun` does for its ranks).
    print(f"listening on http://{NODE_IP}:{node.port}", flush=True, file=sys.stderr if command else sys.stdout)
    status = 0
    try:
        if command:
            env = dict(os.environ, KUBECONFIG=os.path.abspath(args.kubeconfig))
            proc = await asyncio.create_subprocess_exec(*command, env=env)
            waiter = asyncio.create_task(proc.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                proc.terminate()
                await proc.wait()
            stopper.cancel()
            rc = proc.returncode if proc.returncode is not None else 1
            status = 128 - rc if rc < 0 else rc
        else:
            await stop.wait()
    finally:
        server.close()
        http_server.close_all()
        await node.shutdown()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        guard.close()
        if not args.log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)
        if command:
            with contextlib.suppress(OSError):
                os.remove(args.kubeconfig)
    return status


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 11):
        sys.exit("k8s-sim needs Python >= 3.11")
    parser = argparse.ArgumentParser(description="Local Kubernetes API + Job controller + process node agent")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--kubeconfig", required=True, help="where to write a kubeconfig for this server")
    parser.add_argument("--node-labels", type=parse_node_labels, default={"kubernetes.io/hostname": NODE_NAME},
                        help="labels of the node sim-node, k=v,... (default kubernetes.io/hostname=sim-node)")
    parser.add_argument("--log-dir", help="keep pod logs in this directory (default: a temp dir removed on exit)")
    parser.add_argument("--inherit-env", action="store_true",
                        help="pod processes inherit the simulator's whole environment (default: PATH, HOME, "
                             "LANG, LC_ALL, TZ, TMPDIR only, plus the pod's env)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: a command to run against this API (KUBECONFIG set for it); the "
                             "simulator stops when it ends and exits with its status")
    args = parser.parse_args(argv)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
