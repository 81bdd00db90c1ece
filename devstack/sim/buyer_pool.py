"""The x402-buyer's voucher pools, consumed state, 402 parsing and voucher choice (no HTTP here).

Follows obol-wire.md §1 (signer.go id:59782807633, proxy.go@2c085aad, config.go@2c085aad,
state.go@4e8b116c):
- 1a: only the 402's JSON body is read; it must parse and carry a non-empty `accepts`; each entry's
  amount is `amount`, else `maxAmountRequired`; its network goes through the alias table to CAIP-2.
- 1c: a `{id, payment}` voucher is cloned through the v2 PaymentPayload shape (unknown top-level fields
  are lost, a string `resource` does not decode), only its empty `accepted` fields are filled from the
  chosen entry, `x402Version` becomes 2 only if it was 0; a flat legacy auth gets a fresh envelope.
- 1d: the first entry the pool can sign (network as CAIP-2 case-insensitive, payTo and asset
  case-insensitive, amount equal to the config price as a string, pool not empty; scheme not
  checked); FIFO head; head vouchers whose deadline is within 10 s are dropped (memory only); a hold
  counts as spent until it is confirmed (key persisted) or released (back to the head); the consume
  key is id, nonce, the payment's nonce, signature; `spent` is the number of keys stored for the
  upstream.
- 1h: directory mode, `<name>.json` per upstream; a file that does not parse is skipped.
The state file is `{"consumed": {upstream: [keys]}}`, written through `.tmp` and a rename.

One deliberate difference, where the real buyer has a race: it rebuilds every pool from the files at
each reload, so a reload that lands while a paid call holds a voucher puts that voucher back in the
new pool, and until the next reload calls may pick it again and be refused. Here a rebuild leaves
held vouchers out (and counts them as spent) until their call resolves; everything else a reload
does (re-reading files, re-admitting vouchers dropped as expired, `spent` from the state file) is the same.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPIRY_MARGIN_S = 10
# normalizeNetworkID (signer.go): anything else is kept as written.
NETWORK_ALIASES = {
    "base": "eip155:8453", "base-mainnet": "eip155:8453", "base-sepolia": "eip155:84532",
    "ethereum": "eip155:1", "ethereum-mainnet": "eip155:1", "mainnet": "eip155:1", "sepolia": "eip155:11155111",
    "polygon": "eip155:137", "polygon-mainnet": "eip155:137", "polygon-amoy": "eip155:80002",
    "avalanche": "eip155:43114", "avalanche-mainnet": "eip155:43114", "avalanche-fuji": "eip155:43113",
    "arbitrum": "eip155:42161", "arbitrum-one": "eip155:42161", "arbitrum-sepolia": "eip155:421614",
}
CONFIG_STRINGS = ("url", "remoteModel", "network", "payTo", "asset", "assetSymbol", "assetTransferMethod",
                  "eip712Name", "eip712Version", "price")
FLAT_FIELDS = ("signature", "from", "to", "value", "validAfter", "validBefore", "nonce")
REQUIREMENT_STRINGS = ("scheme", "network", "asset", "amount", "payTo")


def normalize_network(network: str) -> str:
    return NETWORK_ALIASES.get(network.strip().lower(), network)


def normalize_model(model: str) -> str:
    """Trim, then strip leading `paid/` and `openai/` in any order, repeatedly."""
    model = model.strip()
    while True:
        before = model
        model = model.removeprefix("paid/").removeprefix("openai/")
        if model == before:
            return model


class Undecodable(ValueError):
    """What Go's json.Unmarshal into the buyer's structs would refuse."""


def _want(value: Any, kind: type, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Undecodable(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def parse_config(doc: Any) -> dict:
    """An upstream entry (UpstreamConfig): string fields, `assetDecimals` an int."""
    _want(doc, dict, optional=False)
    cfg = {key: _want(doc.get(key), str) or "" for key in CONFIG_STRINGS}
    cfg["assetDecimals"] = _want(doc.get("assetDecimals"), int) or 0
    return cfg


def _requirements(doc: Any) -> dict:
    _want(doc, dict)
    doc = doc or {}
    out = {key: _want(doc.get(key), str) or "" for key in REQUIREMENT_STRINGS}
    out["maxTimeoutSeconds"] = _want(doc.get("maxTimeoutSeconds"), int) or 0
    extra = _want(doc.get("extra"), dict)
    if extra:
        out["extra"] = extra
    return out


def clone_payment(doc: Any) -> dict:
    """The v2 PaymentPayload round trip: what the Go struct keeps, in its field order."""
    _want(doc, dict, optional=False)
    out: dict[str, Any] = {"x402Version": _want(doc.get("x402Version"), int) or 0,
                           "payload": _want(doc.get("payload"), dict),
                           "accepted": _requirements(doc.get("accepted"))}
    resource = _want(doc.get("resource"), dict)  # a string resource cannot decode into ResourceInfo
    if resource is not None:
        out["resource"] = {key: resource[key] for key in ("url", "description", "mimeType") if key in resource}
    extensions = _want(doc.get("extensions"), dict)
    if extensions:
        out["extensions"] = extensions
    return out


def parse_auth(doc: Any) -> dict:
    """A PreSignedAuth: `{id, payment}` and/or the flat legacy fields, all strings."""
    _want(doc, dict, optional=False)
    auth = {key: _want(doc.get(key), str) or "" for key in ("id",) + FLAT_FIELDS}
    payment = doc.get("payment")
    auth["payment"] = clone_payment(payment) if payment is not None else None
    return auth


def consume_key(auth: dict) -> str:
    if auth["id"]:
        return auth["id"]
    if auth["nonce"]:
        return auth["nonce"]
    payload = (auth["payment"] or {}).get("payload") or {}
    for key in ("authorization", "permit2Authorization"):
        nonce = (payload.get(key) or {}).get("nonce") if isinstance(payload.get(key), dict) else None
        if isinstance(nonce, str) and nonce:
            return nonce
    return auth["signature"]


def _unix(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value:
        try:
            return int(value)
        except ValueError:
            return None
    return None


def deadline(auth: dict) -> int | None:
    """permit2Authorization.deadline, then authorization.validBefore, then the flat validBefore."""
    payload = (auth["payment"] or {}).get("payload") or {}
    for key, name in (("permit2Authorization", "deadline"), ("authorization", "validBefore")):
        part = payload.get(key)
        if isinstance(part, dict) and _unix(part.get(name)) is not None:
            return _unix(part.get(name))
    return _unix(auth["validBefore"])


def parse_requirements(body: bytes) -> list[dict]:
    """parsePaymentRequirements: the 402 body's accepts, amounts resolved, networks as CAIP-2."""
    try:
        doc = json.loads(body)
        _want(doc, dict, optional=False)
        _want(doc.get("x402Version"), int)
        accepts = _want(doc.get("accepts"), list) or []
        entries = []
        for entry in accepts:
            _want(entry, dict, optional=False)
            req = _requirements(entry)
            legacy = _want(entry.get("maxAmountRequired"), str) or ""
            req["amount"] = req["amount"] or legacy
            req["network"] = normalize_network(req["network"])
            entries.append(req)
    except (ValueError, Undecodable) as exc:
        raise Undecodable(f"failed to parse payment requirements JSON: {exc}") from exc
    if not entries:
        raise Undecodable("no payment requirements in response")
    return entries


@dataclass
class Upstream:
    name: str
    config: dict
    remote_model: str
    pool: list[dict] = field(default_factory=list)


class Pools:
    """Every purchase the buyer serves, its pool and the persistent consumed state; one lock for all."""

    def __init__(self, config_dir: Path, auths_dir: Path, state_file: Path) -> None:
        self.config_dir, self.auths_dir, self.state_file = config_dir, auths_dir, state_file
        self.lock = threading.Lock()
        self.upstreams: dict[str, Upstream] = {}
        self.routes: dict[str, str] = {}
        self.held: dict[str, dict[str, dict]] = {}  # upstream -> consume key -> auth, while a paid call is out
        self.consumed: dict[str, set[str]] = self._load_state()

    def _load_state(self) -> dict[str, set[str]]:
        try:
            doc = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        return {name: set(keys) for name, keys in (doc.get("consumed") or {}).items()}

    @staticmethod
    def _read_dir(directory: Path, parse) -> dict[str, Any]:
        out = {}
        for path in sorted(directory.glob("*.json")):
            if not path.is_file():
                continue
            try:
                out[path.stem] = parse(json.loads(path.read_text()))
            except (OSError, ValueError, Undecodable):
                continue  # LoadConfigDir / LoadAuthsDir skip a file that does not parse
        return out

    def reload(self) -> None:
        """Rebuild every upstream from the files; consumed (and held) vouchers stay out."""
        configs = self._read_dir(self.config_dir, parse_config)
        auths = self._read_dir(self.auths_dir, lambda doc: [parse_auth(a) for a in _want(doc, list) or []])
        with self.lock:
            upstreams, routes = {}, {}
            for name, cfg in configs.items():
                skip = self.consumed.get(name, set()) | set(self.held.get(name, {}))
                pool = [a for a in auths.get(name, []) if not (consume_key(a) and consume_key(a) in skip)]
                remote = normalize_model(cfg["remoteModel"]) or normalize_model(name)
                upstreams[name] = Upstream(name, cfg, remote, pool)
                routes[remote] = name
            self.upstreams, self.routes = upstreams, routes

    def remove(self, name: str) -> None:
        """/admin/remove: from memory only; the next reload brings it back if its file is still there."""
        with self.lock:
            upstream = self.upstreams.pop(name, None)
            if upstream is not None and self.routes.get(upstream.remote_model) == name:
                del self.routes[upstream.remote_model]

    def route(self, model: str) -> Upstream | None:
        with self.lock:
            name = self.routes.get(normalize_model(model))
            return self.upstreams.get(name) if name else None

    def spent(self, name: str) -> int:
        return len(self.consumed.get(name, ())) + len(self.held.get(name, {}))

    def status(self) -> dict:
        with self.lock:
            return {name: {"url": u.config["url"], "remote_model": u.remote_model,
                           "public_model": "paid/" + u.remote_model, "remaining": len(u.pool),
                           "spent": self.spent(name), "network": u.config["network"]}
                    for name, u in self.upstreams.items()}

    # -- choosing and holding a voucher ---------------------------------------------------------
    def hold(self, upstream: Upstream, requirements: list[dict]) -> tuple[dict, dict] | None:
        """(payment to send, held auth) for the first entry the pool can sign, or None (no valid signer)."""
        cfg = upstream.config
        with self.lock:
            for req in requirements:
                if (req["network"].lower() == normalize_network(cfg["network"]).lower()
                        and req["payTo"].lower() == cfg["payTo"].lower() and req["asset"].lower() == cfg["asset"].lower()
                        and (not req["amount"] or req["amount"] == cfg["price"]) and upstream.pool):
                    break
            else:
                return None
            now = int(time.time())
            while upstream.pool and (d := deadline(upstream.pool[0])) is not None and d <= now + EXPIRY_MARGIN_S:
                upstream.pool.pop(0)  # memory only: the next reload brings it back
            if not upstream.pool:
                return None
            auth = upstream.pool.pop(0)
            self.held.setdefault(upstream.name, {})[consume_key(auth) or str(id(auth))] = auth
        return build_payment(auth, req, cfg), auth

    def confirm(self, upstream: Upstream, auth: dict) -> None:
        key = consume_key(auth)
        with self.lock:
            self.held.get(upstream.name, {}).pop(key or str(id(auth)), None)
            if not key:
                return
            self.consumed.setdefault(upstream.name, set()).add(key)
            self._write_state()

    def release(self, upstream: Upstream, auth: dict) -> None:
        """Back to the head of the pool (of the current generation of this upstream, if it still serves)."""
        key = consume_key(auth)
        with self.lock:
            self.held.get(upstream.name, {}).pop(key or str(id(auth)), None)
            current = self.upstreams.get(upstream.name)
            if current is not None:
                current.pool.insert(0, auth)

    def _write_state(self) -> None:
        doc = {"consumed": {name: sorted(keys) for name, keys in self.consumed.items()}}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(self.state_file) + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_file)


def build_payment(auth: dict, req: dict, cfg: dict) -> dict:
    """HoldSign: the stored payment with only its empty `accepted` fields filled, or a fresh envelope."""
    accepted = {"scheme": req["scheme"] or "exact", "network": req["network"] or normalize_network(cfg["network"]),
                "asset": req["asset"], "amount": req["amount"] or cfg["price"], "payTo": req["payTo"],
                "maxTimeoutSeconds": req["maxTimeoutSeconds"]}
    if req.get("extra"):
        accepted["extra"] = req["extra"]
    if auth["payment"] is not None:
        payment = copy.deepcopy(auth["payment"])
        mine = payment["accepted"]
        mine["scheme"] = mine["scheme"] or accepted["scheme"]
        mine["network"] = normalize_network(mine["network"]) if mine["network"] else accepted["network"]
        for key in ("amount", "asset", "payTo"):
            mine[key] = mine[key] or accepted[key]
        if payment["x402Version"] == 0:
            payment["x402Version"] = 2
        return payment
    return {"x402Version": 2,
            "payload": {"signature": auth["signature"],
                        "authorization": {k: auth[k] for k in ("from", "to", "value", "validAfter", "validBefore",
                                                               "nonce")}},
            "accepted": accepted}
