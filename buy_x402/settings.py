"""Every setting the skill uses, resolved once. The only module that reads the environment.

Precedence: command-line flags (applied by the caller with `dataclasses.replace`) > environment >
defaults. `buy.py env` prints `describe()`, with secrets masked; `exports()` gives the environment
back, so a scheduled run resolves the same settings. The agent runtime's settings (`agent_*`) are
read from the variables of the runtime an Obol pod runs (Hermes: HERMES_HOME, HERMES_BIN, ...).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Mapping

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IN_CLUSTER_API = "https://kubernetes.default.svc"
DEFAULT_NAMESPACE = "hermes-obol-agent"
DEFAULT_SIGNER_URL = "http://remote-signer:9000"
DEFAULT_ERPC_URL = "http://erpc.erpc.svc.cluster.local/rpc"
DEFAULT_BUYER_URL = "http://x402-buyer.llm.svc.cluster.local:8402"
DEFAULT_AGENT_HOME = "/data/.hermes"
AGENT_CLI_CANDIDATES = ("/opt/hermes/.venv/bin/hermes",)
DEFAULT_USER_AGENT = "obol-buy-x402/1.0 (+https://github.com/ObolNetwork/obol-stack)"
DEFAULT_CHAIN = "base-sepolia"
DEFAULT_SKILLS_DIR = "/data/.hermes/obol-skills"

# (field, env var, is secret) — the table `buy.py env` prints.
_ENV_TABLE = (
    ("service_account_dir", "BUY_X402_SERVICE_ACCOUNT_DIR", False),
    ("kube_api_server", "KUBERNETES_SERVICE_HOST", False),
    ("kubeconfig", "KUBECONFIG", False),
    ("agent_namespace", "AGENT_NAMESPACE", False),
    ("remote_signer_url", "REMOTE_SIGNER_URL", False),
    ("erpc_url", "ERPC_URL", False),
    ("default_chain", "ERPC_NETWORK", False),
    ("x402_buyer_url", "X402_BUYER_URL", False),
    ("agent_home", "HERMES_HOME", False),
    ("agent_cli", "HERMES_BIN", False),
    ("agent_managed", "HERMES_MANAGED", False),
    ("user_agent", "OBOL_BUYER_USER_AGENT", False),
    ("auth_ttl", "OBOL_X402_AUTH_TTL", False),
    ("skills_dir", "OBOL_SKILLS_DIR", False),
)


@dataclass(frozen=True)
class Settings:
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    kube_api_server: str = IN_CLUSTER_API
    kubeconfig: str | None = None
    agent_namespace: str | None = None        # env value only; kube.py applies SA file → env → context → default
    remote_signer_url: str = DEFAULT_SIGNER_URL
    erpc_url: str = DEFAULT_ERPC_URL
    default_chain: str = DEFAULT_CHAIN
    x402_buyer_url: str = DEFAULT_BUYER_URL
    agent_home: str = DEFAULT_AGENT_HOME      # the agent runtime's home (its config lives there)
    agent_cli: str | None = None              # the runtime's CLI; None: none found, the fallback writer is used
    agent_managed: bool = False               # the operator owns the agent's config: never write it
    user_agent: str = DEFAULT_USER_AGENT
    auth_ttl: str | None = None
    skills_dir: str = DEFAULT_SKILLS_DIR
    home: str = "/root"

    def describe(self) -> list[tuple[str, str, str]]:
        """(setting, env var, resolved value) rows; credentials in a peer URL are masked."""
        from .urls import mask
        rows = []
        for name, env, secret in _ENV_TABLE:
            value = getattr(self, name)
            shown = "****" if (secret and value) else ("" if value is None else mask(str(value)))
            rows.append((name, env, shown))
        return rows

    def exports(self) -> list[tuple[str, str]]:
        """(variable, value) pairs that make a later run in another environment (the scheduled job)
        resolve these same settings; paths absolute, unset values left out."""
        kubeconfig = (":".join(os.path.abspath(p) for p in self.kubeconfig.split(":") if p)
                      if self.kubeconfig else None)
        pairs = [("HOME", self.home), ("HERMES_HOME", os.path.abspath(self.agent_home)), ("KUBECONFIG", kubeconfig),
                 ("AGENT_NAMESPACE", self.agent_namespace), ("REMOTE_SIGNER_URL", self.remote_signer_url),
                 ("ERPC_URL", self.erpc_url), ("ERPC_NETWORK", self.default_chain),
                 ("X402_BUYER_URL", self.x402_buyer_url), ("HERMES_BIN", self.agent_cli),
                 ("OBOL_BUYER_USER_AGENT", self.user_agent), ("OBOL_X402_AUTH_TTL", self.auth_ttl),
                 ("BUY_X402_SERVICE_ACCOUNT_DIR", self.service_account_dir)]
        return [(k, str(v)) for k, v in pairs if v not in (None, "")]


def _find_agent_cli(env: Mapping[str, str]) -> str | None:
    explicit = env.get("HERMES_BIN", "").strip()
    if explicit:
        return explicit
    for candidate in AGENT_CLI_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("hermes", path=env.get("PATH"))


def _kube_api_server(env: Mapping[str, str]) -> str:
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    if not host:
        return IN_CLUSTER_API
    port = env.get("KUBERNETES_SERVICE_PORT", "443").strip() or "443"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"https://{host}:{port}"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")

    def get(name: str, default: str) -> str:
        return env.get(name, "").strip() or default

    kubeconfig = env.get("KUBECONFIG", "").strip() or None
    agent_home = get("HERMES_HOME", DEFAULT_AGENT_HOME)
    return Settings(
        service_account_dir=get("BUY_X402_SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR),
        kube_api_server=_kube_api_server(env),
        kubeconfig=kubeconfig,
        agent_namespace=env.get("AGENT_NAMESPACE", "").strip() or None,
        remote_signer_url=get("REMOTE_SIGNER_URL", DEFAULT_SIGNER_URL).rstrip("/"),
        erpc_url=get("ERPC_URL", DEFAULT_ERPC_URL).rstrip("/"),
        default_chain=get("ERPC_NETWORK", DEFAULT_CHAIN),
        x402_buyer_url=get("X402_BUYER_URL", DEFAULT_BUYER_URL).rstrip("/"),
        agent_home=agent_home,
        agent_cli=_find_agent_cli(env),
        agent_managed=bool(env.get("HERMES_MANAGED", "").strip()),
        user_agent=get("OBOL_BUYER_USER_AGENT", DEFAULT_USER_AGENT),
        auth_ttl=env.get("OBOL_X402_AUTH_TTL", "").strip() or None,
        skills_dir=get("OBOL_SKILLS_DIR", os.path.join(agent_home, "obol-skills")),
        home=home,
    )


__all__ = ["Settings", "load"]
