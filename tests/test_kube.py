"""KubeClient against the real CRD API server (etcd + crdsrv) with the project's PurchaseRequest CRD.

Only the kube part of the devstack is started (about 1 s), once for this module.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
import time
import uuid

import pytest

from buy_x402 import settings as settings_mod
from buy_x402.errors import KubeApiError, NotReadyError, TransportError
from buy_x402.kube import KubeClient, WaitTimeout, load_config
from devstack.parts import kube as kube_part
from devstack.stack import down, up


@pytest.fixture(scope="module")
def kube_stack(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("kube-stack"))
    stack = up(directory, ["kube"])
    yield stack
    down(directory)


@pytest.fixture(scope="module")
def client(kube_stack) -> KubeClient:
    # Resolve exactly as buy.py does in a devstack shell: from the env the part exports.
    env = dict(kube_stack.env, HOME="/nonexistent")
    config = load_config(settings_mod.load(env))
    assert config.source == "kubeconfig"
    return KubeClient(config)


def _pr(name: str, **spec_overrides) -> dict:
    spec = {
        "endpoint": "http://127.0.0.1:1/services/qwen/v1/chat/completions",
        "model": "qwen3.6-35b",
        "count": 2,
        "payment": {"network": "base-sepolia", "payTo": "0x" + "22" * 20, "price": "1000",
                    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e"},
        "preSignedAuths": [{"id": "0x01", "payment": {"x402Version": 2, "payload": {"nested": {"a": 1}}}},
                           {"id": "0x02", "payment": {"x402Version": 2}}],
    }
    spec.update(spec_overrides)
    return {"apiVersion": "obol.org/v1alpha1", "kind": "PurchaseRequest",
            "metadata": {"name": name, "labels": {"test": "kube"}}, "spec": spec}


def _name() -> str:
    return "pr-" + uuid.uuid4().hex[:8]


def test_part_exports_what_buy_needs(kube_stack):
    info = kube_stack.info["kube"]
    assert set(info) == {"server", "token", "ca", "kubeconfig", "namespace"}
    assert kube_stack.env["KUBECONFIG"] == info["kubeconfig"]
    assert kube_stack.env["AGENT_NAMESPACE"] == info["namespace"] == "hermes-obol-agent"
    assert not (kube_stack.dir / "no-serviceaccount").exists()
    assert kube_stack.env["BUY_X402_SERVICE_ACCOUNT_DIR"] == str(kube_stack.dir / "no-serviceaccount")


def test_create_get_and_duplicate(client):
    name = _name()
    created = client.create(_pr(name))
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1
    assert meta["namespace"] == "hermes-obol-agent"
    # The schemaless voucher payload is preserved as written.
    assert created["spec"]["preSignedAuths"][0]["payment"]["payload"] == {"nested": {"a": 1}}

    with pytest.raises(KubeApiError) as exc:
        client.create(_pr(name))
    assert (exc.value.status_code, exc.value.reason) == (409, "AlreadyExists")
    assert "already exists" in exc.value.message

    assert client.get(name)["metadata"]["uid"] == meta["uid"]


def test_get_missing_is_not_found(client):
    with pytest.raises(KubeApiError) as exc:
        client.get("does-not-exist")
    assert (exc.value.status_code, exc.value.reason) == (404, "NotFound")


def test_replace_bumps_generation_and_stale_version_conflicts(client):
    name = _name()
    created = client.create(_pr(name))
    changed = copy.deepcopy(created)
    changed["spec"]["count"] = 1
    updated = client.replace(changed)
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    stale = copy.deepcopy(created)  # still carries the first resourceVersion
    stale["spec"]["model"] = "other"
    with pytest.raises(KubeApiError) as exc:
        client.replace(stale)
    assert (exc.value.status_code, exc.value.reason) == (409, "Conflict")
    assert client.get(name)["spec"]["model"] == "qwen3.6-35b"


@pytest.mark.parametrize("bad", [{"count": 0}, {"count": 2501}, {"payment": {"network": "base-sepolia"}}])
def test_schema_rejects_bad_spec(client, bad):
    name = _name()
    with pytest.raises(KubeApiError) as exc:
        client.create(_pr(name, **bad))
    assert (exc.value.status_code, exc.value.reason) == (422, "Invalid")
    with pytest.raises(KubeApiError, match="not found"):
        client.get(name)


def test_list_with_label_selector(client):
    team = uuid.uuid4().hex[:6]
    mine = _pr(_name())
    mine["metadata"]["labels"]["team"] = team
    client.create(mine)
    client.create(_pr(_name()))
    items, rv = client.list_with_version(label_selector=f"team={team}")
    assert [i["metadata"]["name"] for i in items] == [mine["metadata"]["name"]]
    assert rv.isdigit()
    assert len(client.list(label_selector="test=kube")) >= 2


def test_status_subresource_ignores_spec(client):
    name = _name()
    created = client.create(_pr(name))
    obj = copy.deepcopy(created)
    obj["spec"]["model"] = "sneaky"
    obj["status"] = {"remaining": 2, "publicModel": "paid/qwen3.6-35b", "observedGeneration": 1,
                     "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
                                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    after = client.replace_status(obj)
    assert after["status"]["remaining"] == 2
    assert after["spec"]["model"] == "qwen3.6-35b"
    assert after["metadata"]["generation"] == 1
    # ... and the main resource ignores status.
    again = copy.deepcopy(after)
    again["status"]["remaining"] = 99
    assert client.replace(again)["status"]["remaining"] == 2


def test_the_upstream_schema_has_no_cost_cap_and_a_strict_dry_run_says_so(client):
    """The devstack serves the upstream CRD: a plain write prunes autoRefill.maxUnitPrice; a dry run with
    fieldValidation=Strict (what buy.py sends before signing) refuses it and stores nothing."""
    name = _name()
    refill = {"enabled": True, "threshold": 1, "count": 5, "maxUnitPrice": "1500", "maxSpendPerDay": "100000"}
    with pytest.raises(KubeApiError) as caught:
        client.create(_pr(name, autoRefill=refill), dry_run=True)
    assert caught.value.reason == "BadRequest"
    assert 'unknown field "spec.autoRefill.maxUnitPrice"' in caught.value.message
    with pytest.raises(KubeApiError) as missing:
        client.get(name)
    assert missing.value.reason == "NotFound"
    checked = client.create(_pr(name, autoRefill={k: v for k, v in refill.items() if k != "maxUnitPrice"}),
                            dry_run=True)
    assert checked["metadata"]["name"] == name and "uid" in checked["metadata"]
    with pytest.raises(KubeApiError):
        client.get(name)  # a dry run stores nothing
    client.create(_pr(name, autoRefill=refill))
    assert client.get(name)["spec"]["autoRefill"] == {k: v for k, v in refill.items() if k != "maxUnitPrice"}


def test_a_variant_schema_keeps_the_cost_cap_and_pruning_follows_the_served_schema(kube_stack, client):
    name = _name()
    refill = {"enabled": True, "threshold": 1, "count": 5, "maxUnitPrice": "1500"}
    kube_part.apply_crd(kube_stack.info["kube"], kube_part.crd_with_cost_cap())
    try:
        client.create(_pr(name, autoRefill=refill), dry_run=True)
        obj = client.create(_pr(name, autoRefill=refill))
        assert client.get(name)["spec"]["autoRefill"] == refill
        replaced = client.replace(dict(obj, spec=dict(obj["spec"], count=1)), dry_run=True)
        assert replaced["spec"]["count"] == 1 and client.get(name)["spec"]["count"] == 2
    finally:
        kube_part.apply_crd(kube_stack.info["kube"], kube_part.crd_document())
    assert client.get(name)["spec"]["autoRefill"] == {k: v for k, v in refill.items() if k != "maxUnitPrice"}


def test_unknown_spec_fields_are_pruned(client):
    """The schema is structural: a field it does not declare is dropped, so declaring matters."""
    name = _name()
    client.create(_pr(name, autoRefill={"enabled": True, "notAField": "x"}))
    assert client.get(name)["spec"]["autoRefill"] == {"enabled": True}


def test_watch_sees_modified(client):
    name = _name()
    created = client.create(_pr(name))
    rv = created["metadata"]["resourceVersion"]

    def modify():
        time.sleep(0.3)
        obj = client.get(name)
        obj["metadata"].setdefault("labels", {})["touched"] = "yes"
        client.replace(obj)

    threading.Thread(target=modify).start()
    events = []
    for kind, obj in client.watch(name, resource_version=rv, timeout_s=5):
        events.append((kind, obj["metadata"].get("labels", {}).get("touched")))
        if kind == "MODIFIED":
            break
    assert ("MODIFIED", "yes") in events


def test_delete(client):
    name = _name()
    client.create(_pr(name))
    client.delete(name)
    with pytest.raises(KubeApiError) as exc:
        client.delete(name)
    assert exc.value.reason == "NotFound"


def _set_status_later(client: KubeClient, name: str, delay: float, **status) -> threading.Thread:
    def run():
        time.sleep(delay)
        obj = client.get(name)
        obj["status"] = status
        client.replace_status(obj)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_wait_for_returns_on_status_update(client):
    name = _name()
    client.create(_pr(name))
    seen = []
    _set_status_later(client, name, 0.2, remaining=1)
    writer = _set_status_later(client, name, 0.6, remaining=2)
    started = time.monotonic()
    got = client.wait_for(name, lambda o: (o.get("status") or {}).get("remaining") == 2, timeout_s=20,
                          on_change=lambda o: seen.append((o.get("status") or {}).get("remaining")))
    elapsed = time.monotonic() - started
    writer.join()
    assert got["status"]["remaining"] == 2
    assert seen == [None, 1, 2]  # every version once: the first GET, then each watch event
    assert elapsed < 5  # pushed by the watch, not found by a slow poll


def test_wait_for_times_out_with_last_object(client):
    name = _name()
    client.create(_pr(name))
    _set_status_later(client, name, 0.2, remaining=1).join()
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as exc:
        client.wait_for(name, lambda o: False, timeout_s=1.5)
    assert 1.4 <= time.monotonic() - started < 6
    assert isinstance(exc.value, NotReadyError)
    assert exc.value.data["last"]["status"]["remaining"] == 1


def test_wait_for_missing_object(client):
    with pytest.raises(KubeApiError) as exc:
        client.wait_for("never-created", lambda o: True, timeout_s=2)
    assert exc.value.reason == "NotFound"


def test_wrong_token_is_unauthorized(client):
    bad = KubeClient(dataclasses.replace(client.config, token="not-the-token"))
    with pytest.raises(KubeApiError) as exc:
        bad.list()
    assert (exc.value.status_code, exc.value.reason) == (401, "Unauthorized")
    assert exc.value.hint


def test_tls_is_verified_against_the_serving_cert(client):
    # The system CA bundle does not know the devstack's self-signed serving cert.
    with pytest.raises(TransportError):
        KubeClient(dataclasses.replace(client.config, verify=True)).list()


def test_watch_from_a_too_old_version_is_gone(client):
    name = _name()
    client.create(_pr(name))
    with pytest.raises(KubeApiError) as exc:
        list(client.watch(name, resource_version="1", timeout_s=2))
    assert exc.value.status_code == 410
    assert "too old resource version" in exc.value.message


class _FirstGetIsStale(KubeClient):
    """The first GET hands back a version the server has long forgotten, as after a long pause."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.gets = 0

    def get(self, name):
        obj = super().get(name)
        self.gets += 1
        if self.gets == 1:
            obj["metadata"]["resourceVersion"] = "1"
        return obj


def test_wait_for_recovers_from_gone_by_reading_again(client):
    name = _name()
    client.create(_pr(name))
    stale = _FirstGetIsStale(client.config)
    writer = _set_status_later(client, name, 0.5, remaining=2)
    got = stale.wait_for(name, lambda o: (o.get("status") or {}).get("remaining") == 2, timeout_s=10)
    writer.join()
    assert got["status"]["remaining"] == 2
    assert stale.gets >= 2  # the real 410 from the server made it read the object again
