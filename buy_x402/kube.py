"""A tiny Kubernetes REST client for the PurchaseRequest custom resource.

Where the credentials come from is decided in one place, `load_config`: the pod's service account
first (that is how the skill runs in an Obol agent pod), else a kubeconfig (a developer machine, the
devstack). Only static credentials are supported: a bearer token or a client certificate. Exec plugins
and auth providers would mean running arbitrary programs from the skill, so they are refused.

Every non-2xx answer becomes `KubeApiError` with the API `Status` reason (AlreadyExists, Conflict,
NotFound, Invalid, Forbidden, Unauthorized, Gone/Expired) so callers branch on `reason`, not on text.
"""
from __future__ import annotations

import atexit
import base64
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import requests
import yaml

from .errors import ConfigError, KubeApiError, NotReadyError, TransportError
from .http import deadline, make_session, send
from .settings import DEFAULT_NAMESPACE, Settings

PEER = "Kubernetes API"
DEFAULT_TIMEOUT_S = 30.0
_HTTP_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 409: "Conflict", 410: "Gone", 422: "Invalid",
                 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
# A server-side dry run that also refuses fields the schema does not declare (instead of pruning them).
DRY_RUN = {"dryRun": "All", "fieldValidation": "Strict"}
_UNSUPPORTED_HINT = ("give the kubeconfig user a static `token`, `tokenFile` or a client certificate, "
                     "or run the skill in-cluster with its service account")


class WaitTimeout(NotReadyError):
    """`wait_for` ran out of time; `data["last"]` is the last version of the object seen.

    A subclass of `NotReadyError` (exit code 3): the object exists, it just did not get there in time.
    """
    code = "wait_timeout"


@dataclass(frozen=True)
class KubeConfig:
    server: str
    namespace: str
    token: str | None = None
    verify: str | bool = True               # CA bundle path, or a bool (False: insecure-skip-tls-verify)
    cert: tuple[str, str] | None = None     # (client certificate, key) file paths
    source: str = "kubeconfig"              # "in-cluster" | "kubeconfig"


def load_config(settings: Settings) -> KubeConfig:
    """In-cluster service account if mounted, else the kubeconfig; ConfigError names both places."""
    sa_dir = Path(settings.service_account_dir)
    if (sa_dir / "token").is_file():
        return _from_service_account(sa_dir, settings)
    path = _kubeconfig_path(settings)
    if path is None:
        wanted = settings.kubeconfig or os.path.join(settings.home, ".kube", "config")
        raise ConfigError(
            f"no Kubernetes credentials: no service account token in {sa_dir} and no kubeconfig at {wanted}",
            hint="run inside the agent pod, or set KUBECONFIG to a kubeconfig file")
    return _from_kubeconfig(path, settings)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _from_service_account(sa_dir: Path, settings: Settings) -> KubeConfig:
    ns_file = sa_dir / "namespace"
    namespace = (_read(ns_file) if ns_file.is_file() else "") or settings.agent_namespace or DEFAULT_NAMESPACE
    ca = sa_dir / "ca.crt"
    return KubeConfig(server=settings.kube_api_server, namespace=namespace, token=_read(sa_dir / "token"),
                      verify=str(ca) if ca.is_file() else True, source="in-cluster")


def _kubeconfig_path(settings: Settings) -> Path | None:
    """KUBECONFIG may be a list; the first existing file is used (no merging)."""
    candidates = (settings.kubeconfig.split(os.pathsep) if settings.kubeconfig
                  else [os.path.join(settings.home, ".kube", "config")])
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_file():
            return Path(candidate).expanduser()
    return None


def _named(doc: dict, key: str, name: str, path: Path) -> dict:
    for entry in doc.get(key) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(key[:-1]) or {}
    raise ConfigError(f"kubeconfig {path}: no {key[:-1]} named {name!r}",
                      hint="check current-context and its cluster/user entries")


def _from_kubeconfig(path: Path, settings: Settings) -> KubeConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"kubeconfig {path} is not a YAML mapping")
    current = doc.get("current-context")
    if not current:
        raise ConfigError(f"kubeconfig {path} has no current-context",
                          hint="run `kubectl config use-context NAME`")
    context = _named(doc, "contexts", current, path)
    cluster = _named(doc, "clusters", context.get("cluster", ""), path)
    user = _named(doc, "users", context.get("user", ""), path) if context.get("user") else {}
    if user.get("exec") or user.get("auth-provider"):
        raise ConfigError(f"kubeconfig {path}: exec-plugin kubeconfig users are not supported "
                          f"(user {context.get('user')!r})", hint=_UNSUPPORTED_HINT)
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    base = path.parent
    if cluster.get("insecure-skip-tls-verify"):
        verify: str | bool = False
    else:
        verify = _file_or_data(cluster, "certificate-authority", base, path) or True
    token = user.get("token") or None
    if not token and user.get("tokenFile"):
        token = _read(base / os.path.expanduser(user["tokenFile"]))
    cert_file = _file_or_data(user, "client-certificate", base, path)
    key_file = _file_or_data(user, "client-key", base, path)
    cert = (cert_file, key_file) if cert_file and key_file else None
    namespace = settings.agent_namespace or context.get("namespace") or DEFAULT_NAMESPACE
    return KubeConfig(server=server.rstrip("/"), namespace=namespace, token=token, verify=verify,
                      cert=cert, source="kubeconfig")


def _file_or_data(entry: dict, key: str, base: Path, path: Path) -> str | None:
    """`key-data` (inline base64) wins over `key` (a path, relative to the kubeconfig's directory)."""
    if entry.get(f"{key}-data"):
        return _private_file(entry[f"{key}-data"], f"{key}-data", path)
    if entry.get(key):
        return str(base / os.path.expanduser(entry[key]))
    return None


def _private_file(data_b64: str, what: str, path: Path) -> str:
    """Inline kubeconfig data → a 0600 temp file (requests wants paths); removed at exit."""
    try:
        data = base64.b64decode(data_b64, validate=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"kubeconfig {path}: {what} is not valid base64") from exc
    fd, name = tempfile.mkstemp(prefix="buy-x402-kube-", suffix=".pem")  # mkstemp creates it 0600
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    atexit.register(_unlink_quietly, name)
    return name


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def api_error(resp: requests.Response, what: str) -> KubeApiError:
    """A failure answer → KubeApiError with the Status reason and message when the body has one."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    return _status_error(body if isinstance(body, dict) else {}, resp.status_code, what,
                         fallback=resp.text[:200])


def _status_error(status: dict, code: int, what: str, fallback: str = "") -> KubeApiError:
    code = int(status.get("code") or code)
    reason = status.get("reason") or _HTTP_REASONS.get(code, "Unknown")
    message = status.get("message") or fallback or f"HTTP {code}"
    hint = {"Unauthorized": "the token or client certificate was rejected; check the kubeconfig or service account",
            "Forbidden": "the service account needs get/list/watch/create/update/delete on "
                         "obol.org purchaserequests in its namespace"}.get(reason)
    data = {"details": status["details"]} if status.get("details") else None
    return KubeApiError(f"Kubernetes API {what}: {message}", status_code=code, reason=reason, hint=hint, data=data)


class KubeClient:
    """Namespaced custom resources of one kind (default: obol.org/v1alpha1 purchaserequests)."""

    def __init__(self, config: KubeConfig, session: requests.Session | None = None, *,
                 group: str = "obol.org", version: str = "v1alpha1", plural: str = "purchaserequests",
                 namespace: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.config = config
        self.session = session or make_session("buy-x402")
        self.namespace = namespace or config.namespace
        self.timeout_s = timeout_s
        self.base = f"{config.server}/apis/{group}/{version}/namespaces/{self.namespace}/{plural}"
        self._label = f"{self.namespace}/{plural}"  # short form for error messages
        self._headers = {"Accept": "application/json"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> "KubeClient":
        return cls(load_config(settings), make_session(settings.user_agent), **kw)

    def _call(self, method: str, suffix: str = "", *, body: dict | None = None,
              params: dict | None = None, stream: bool = False, timeout: Any = None) -> requests.Response:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        resp = send(self.session, method, self.base + suffix, peer=PEER, timeout=timeout or self.timeout_s,
                    headers=headers, params=params, stream=stream, verify=self.config.verify,
                    cert=self.config.cert, data=json.dumps(body) if body is not None else None)
        if not 200 <= resp.status_code < 300:
            try:
                raise api_error(resp, f"{method} {self._label}{suffix}")
            finally:
                resp.close()
        return resp

    def _json(self, method: str, suffix: str = "", **kw: Any) -> dict:
        resp = self._call(method, suffix, **kw)
        try:
            return resp.json()
        except ValueError as exc:
            raise KubeApiError(f"Kubernetes API {method} {self._label}{suffix}: answer is not JSON",
                               status_code=resp.status_code, reason="BadResponse") from exc

    def get(self, name: str) -> dict:
        return self._json("GET", f"/{name}")

    def get_or_none(self, name: str) -> dict | None:
        """The object, or None when there is none by that name (one small GET, not a list)."""
        try:
            return self.get(name)
        except KubeApiError as err:
            if err.reason == "NotFound":
                return None
            raise

    def list_with_version(self, label_selector: str | None = None) -> tuple[list[dict], str]:
        """Items plus the list's resourceVersion (to start a watch without missing events)."""
        doc = self._json("GET", params={"labelSelector": label_selector} if label_selector else None)
        return list(doc.get("items") or []), (doc.get("metadata") or {}).get("resourceVersion", "")

    def list(self, label_selector: str | None = None) -> list[dict]:
        return self.list_with_version(label_selector)[0]

    def create(self, obj: dict, *, dry_run: bool = False) -> dict:
        """POST; with `dry_run` the server validates and answers without storing (see DRY_RUN)."""
        return self._json("POST", body=obj, params=DRY_RUN if dry_run else None)

    def replace(self, obj: dict, *, dry_run: bool = False) -> dict:
        """PUT the whole object; its metadata.resourceVersion makes a stale write fail with Conflict."""
        return self._json("PUT", f"/{obj['metadata']['name']}", body=obj, params=DRY_RUN if dry_run else None)

    def replace_status(self, obj: dict) -> dict:
        """PUT the status subresource (spec changes in `obj` are ignored by the server)."""
        return self._json("PUT", f"/{obj['metadata']['name']}/status", body=obj)

    def delete(self, name: str, *, dry_run: bool = False) -> dict:
        """DELETE; with `dry_run` the server checks permission and existence and deletes nothing."""
        return self._json("DELETE", f"/{name}", params={"dryRun": "All"} if dry_run else None)

    def watch(self, name: str | None = None, resource_version: str | None = None,
              timeout_s: float = 60.0) -> Iterator[tuple[str, dict]]:
        """(type, object) events: ADDED, MODIFIED, DELETED, BOOKMARK; ends when the server closes.

        An ERROR event raises KubeApiError (410 Gone/Expired: the resourceVersion is too old).
        """
        params: dict[str, Any] = {"watch": "true", "allowWatchBookmarks": "true",
                                  "timeoutSeconds": max(1, math.ceil(timeout_s))}
        if name:
            params["fieldSelector"] = f"metadata.name={name}"
        if resource_version:
            params["resourceVersion"] = resource_version
        with deadline(timeout_s + 10) as exchange:  # the whole stream, not each read: a drip cannot hold it
            resp = self._call("GET", params=params, stream=True, timeout=(self.timeout_s, timeout_s + 10))
            with resp:
                try:
                    for line in resp.iter_lines(chunk_size=None):
                        if not line:
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type", ""), event.get("object") or {}
                        if kind == "ERROR":
                            raise _status_error(obj, 500, f"watch {self._label}")
                        yield kind, obj
                except requests.RequestException as exc:
                    raise TransportError(f"the {PEER} watch stream broke: {exc.__class__.__name__}",
                                         code="timeout" if isinstance(exc, requests.Timeout) or exchange.expired
                                         else None) from exc

    def wait_for(self, name: str, predicate: Callable[[dict], bool], timeout_s: float,
                 on_change: Callable[[dict], None] | None = None) -> dict:
        """Return the object as soon as `predicate(obj)`; GET, then watch from that version.

        `on_change` sees every new version (including the first GET). Raises WaitTimeout with
        data["last"] on the deadline, KubeApiError NotFound if the object is missing or deleted.
        """
        deadline = time.monotonic() + timeout_s
        seen: dict[str, Any] = {"rv": None, "last": None, "watch_rv": None}

        def arrived(obj: dict) -> bool:
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            seen["watch_rv"] = rv
            if rv != seen["rv"]:
                seen.update(rv=rv, last=obj)
                if on_change:
                    on_change(obj)
            return bool(predicate(obj))

        obj = self.get(name)
        if arrived(obj):
            return obj
        while (left := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            try:
                for kind, event_obj in self.watch(name, seen["watch_rv"], timeout_s=left):
                    if kind == "BOOKMARK":  # only a newer resourceVersion to resume from
                        seen["watch_rv"] = (event_obj.get("metadata") or {}).get("resourceVersion")
                        continue
                    if kind == "DELETED":
                        raise KubeApiError(f"{name} was deleted while waiting", status_code=404,
                                           reason="NotFound")
                    if arrived(event_obj):
                        return event_obj
                    if time.monotonic() >= deadline:
                        break
            except KubeApiError as exc:
                if exc.status_code != 410:
                    raise
                if arrived(obj := self.get(name)):  # our resourceVersion expired: start over
                    return obj
            except TransportError:
                if time.monotonic() < deadline:
                    raise
            if time.monotonic() - started < 0.2:
                time.sleep(0.2)  # a stream that closes at once must not turn into a busy loop
        raise WaitTimeout(f"{name} did not reach the expected state within {timeout_s:g} s",
                          data={"name": name, "timeout_s": timeout_s, "last": seen["last"]})


__all__ = ["KubeClient", "KubeConfig", "WaitTimeout", "load_config", "api_error"]
