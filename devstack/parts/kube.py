"""Kubernetes API part: etcd + crdsrv (the real apiextensions-apiserver) serving the PurchaseRequest CRD.

There is no core API group here (no Namespaces, ServiceAccounts or RBAC), so buy.py reaches it through
a kubeconfig with a static bearer token for `system:masters`, exactly like a developer laptop would.
See ../shared/tools/kube-crd-apiserver/README.md for why each flag is there.
"""
from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .. import config
from ..stack import PartFailed, Stack

CRD_FILE = Path(__file__).resolve().parent.parent / "crd" / "purchaserequest.yaml"
CRD_URL_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CR_COLLECTION = "/apis/obol.org/v1alpha1/namespaces/{ns}/purchaserequests"
# Plugins that would ask the (absent) core API about namespaces or webhooks.
DISABLED_ADMISSION = ("NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
                      "ValidatingAdmissionPolicy,MutatingAdmissionPolicy")


def up(stack: Stack) -> None:
    kdir = stack.dir / "kube"
    # A fresh cluster every time: stale objects from an earlier run would leak into tests.
    shutil.rmtree(kdir, ignore_errors=True)
    kdir.mkdir(parents=True)
    token = secrets.token_hex(24)
    _write_pki(kdir / "pki")
    (kdir / "tokens.csv").write_text(f'{token},devstack-admin,devstack-admin-uid,"system:masters"\n')
    (kdir / "tokens.csv").chmod(0o600)
    fake = kdir / "fake.kubeconfig"
    fake.write_text(_kubeconfig_text("https://127.0.0.1:1", ca=None, token="unused", namespace="default",
                                     insecure=True))

    etcd_client, etcd_peer = stack.free_port(), stack.free_port()
    stack.spawn("etcd", [
        "etcd", "--name", "default", "--data-dir", str(kdir / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
        "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
        "--unsafe-no-fsync",
    ])

    port = stack.free_port()
    serving = kdir / "serving"
    stack.spawn("crdsrv", [
        str(stack.deps / "bin" / "crdsrv"),
        f"--etcd-servers=http://127.0.0.1:{etcd_client}",
        "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={serving}",
        f"--client-ca-file={kdir / 'pki' / 'ca.crt'}", "--authentication-skip-lookup",
        f"--token-auth-file={kdir / 'tokens.csv'}",
        f"--authentication-kubeconfig={fake}", f"--authorization-kubeconfig={fake}", f"--kubeconfig={fake}",
        f"--disable-admission-plugins={DISABLED_ADMISSION}",
        "--enable-priority-and-fairness=false",
    ])
    # etcd and crdsrv start side by side: crdsrv retries etcd on its own, which saves ~0.5 s.
    server = f"https://127.0.0.1:{port}"
    ca = serving / "apiserver.crt"
    auth = {"Authorization": f"Bearer {token}"}
    contexts: list[ssl.SSLContext] = []

    def serving_and_trusted() -> bool:
        # The serving cert appears before the port opens; load it only once it is complete.
        if not contexts:
            contexts.append(ssl.create_default_context(cafile=str(ca)))
        return _status(server + "/livez", auth, contexts[0]) == 200
    stack.wait_until("crdsrv", serving_and_trusted, timeout=60, interval=0.05)
    ctx = contexts[0]

    code, body = _request("POST", server + CRD_URL_PATH, auth, ctx, crd_document())
    if code not in (200, 201, 409):
        raise PartFailed(f"crdsrv refused the PurchaseRequest CRD ({code}): {body[:500]}")
    collection = server + CR_COLLECTION.format(ns=config.AGENT_NAMESPACE)
    stack.wait_until("crdsrv", lambda: _status(collection, auth, ctx) == 200, timeout=30, interval=0.05)

    _warm_up_writes(collection, auth, ctx)

    kubeconfig = stack.dir / "kubeconfig"
    kubeconfig.write_text(_kubeconfig_text(server, ca=str(ca), token=token, namespace=config.AGENT_NAMESPACE))
    kubeconfig.chmod(0o600)
    stack.env.update(
        KUBECONFIG=str(kubeconfig),
        AGENT_NAMESPACE=config.AGENT_NAMESPACE,
        # A directory that does not exist: buy.py must not find a service account and uses KUBECONFIG.
        BUY_X402_SERVICE_ACCOUNT_DIR=str(stack.dir / "no-serviceaccount"),
    )
    stack.info["kube"] = {"server": server, "token": token, "ca": str(ca), "kubeconfig": str(kubeconfig),
                          "namespace": config.AGENT_NAMESPACE}


def crd_document() -> dict:
    """The PurchaseRequest CRD the devstack serves: the upstream one (no autoRefill.maxUnitPrice)."""
    return yaml.safe_load(CRD_FILE.read_text())


def crd_with_cost_cap() -> dict:
    """A variant CRD that declares spec.autoRefill.maxUnitPrice, for tests of a cluster that keeps a cost cap."""
    crd = crd_document()
    refill = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["autoRefill"]
    refill["properties"]["maxUnitPrice"] = {"type": "string", "description": "Highest price per request a refill may pay"}
    return crd


def apply_crd(kube_info: dict, crd: dict, *, timeout: float = 30.0) -> None:
    """Replace the served PurchaseRequest CRD and wait until the API server prunes by the new schema.

    Used by tests that need another schema; they put `crd_document()` back in a `finally`.
    """
    auth = {"Authorization": f"Bearer {kube_info['token']}"}
    ctx = ssl.create_default_context(cafile=kube_info["ca"])
    url = kube_info["server"] + CRD_URL_PATH + "/" + crd["metadata"]["name"]
    code, body = _request("GET", url, auth, ctx)
    if code != 200:
        raise PartFailed(f"cannot read the PurchaseRequest CRD ({code}): {body[:300]}")
    current = json.loads(body)
    wanted = dict(crd, metadata=dict(crd["metadata"], resourceVersion=current["metadata"]["resourceVersion"]))
    code, body = _request("PUT", url, auth, ctx, wanted)
    if code != 200:
        raise PartFailed(f"crdsrv refused the PurchaseRequest CRD update ({code}): {body[:500]}")
    keeps = "maxUnitPrice" in json.dumps(crd["spec"]["versions"][0]["schema"])
    probe = {"apiVersion": "obol.org/v1alpha1", "kind": "PurchaseRequest", "metadata": {"name": "devstack-crd-probe"},
             "spec": {"endpoint": "http://127.0.0.1:1", "model": "crd-probe", "count": 1,
                      "payment": {"network": "none", "payTo": "0x0", "price": "0", "asset": "0x0"},
                      "autoRefill": {"enabled": True, "maxUnitPrice": "1"}}}
    collection = kube_info["server"] + CR_COLLECTION.format(ns=kube_info["namespace"]) + "?dryRun=All"
    deadline = time.monotonic() + timeout
    while True:
        code, body = _request("POST", collection, auth, ctx, probe)
        if code in (200, 201) and ("maxUnitPrice" in json.loads(body)["spec"]["autoRefill"]) == keeps:
            return
        if time.monotonic() > deadline:
            raise PartFailed(f"the API server did not switch to the new PurchaseRequest schema ({code}): {body[:300]}")
        time.sleep(0.1)


def _warm_up_writes(collection: str, auth: dict[str, str], ctx: ssl.SSLContext) -> None:
    """Absorb the server's one-off ~2 s delay on its first write, in the background.

    crdsrv with etcd 3.4 (no watch progress requests) holds the very first write for about 2 s; a
    dry-run create takes that hit while the other parts start, so buy.py's first create is fast.
    """
    probe = {"apiVersion": "obol.org/v1alpha1", "kind": "PurchaseRequest",
             "metadata": {"name": "devstack-warm-up"},
             "spec": {"endpoint": "http://127.0.0.1:1", "model": "warm-up", "count": 1,
                      "payment": {"network": "none", "payTo": "0x0", "price": "0", "asset": "0x0"}}}

    def run() -> None:
        try:
            _request("POST", collection + "?dryRun=All", auth, ctx, probe)
        except OSError:
            pass  # only an optimisation
    threading.Thread(target=run, name="kube-warm-up", daemon=True).start()


def _write_pki(pki: Path) -> None:
    """A throwaway client CA: crdsrv requires --client-ca-file even though clients use tokens."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "ca.crt").is_file():
        return
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"), "-days", "30",
                    "-subj", "/CN=devstack-client-ca"],
                   check=True, capture_output=True, timeout=30)


def _kubeconfig_text(server: str, *, ca: str | None, token: str, namespace: str, insecure: bool = False) -> str:
    cluster: dict = {"server": server}
    if ca:
        cluster["certificate-authority"] = ca
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "devstack", "cluster": cluster}],
        "users": [{"name": "devstack-admin", "user": {"token": token}}],
        "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": "devstack-admin",
                                                      "namespace": namespace}}],
        "current-context": "devstack",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _request(method: str, url: str, headers: dict[str, str], ctx: ssl.SSLContext,
             body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _status(url: str, headers: dict[str, str], ctx: ssl.SSLContext) -> int:
    return _request("GET", url, headers, ctx)[0]
