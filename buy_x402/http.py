"""The one place HTTP sessions are built: timeouts, User-Agent, no redirects.

Redirects are never followed by default: a paid request that follows a redirect could hand a signed
voucher to a host the agent never priced. Transport failures become `TransportError` here.
"""
from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .errors import TransportError

DEFAULT_TIMEOUT_S = 15.0


def make_session(user_agent: str, *, pool_size: int = 10) -> requests.Session:
    """A session with a connection pool big enough for bounded-concurrency signing."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    session.trust_env = False  # no proxies/netrc from the environment: the pod talks to its peers directly
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def send(session: requests.Session, method: str, url: str, *, peer: str,
         timeout: float = DEFAULT_TIMEOUT_S, allow_redirects: bool = False,
         **kwargs: Any) -> requests.Response:
    """Send one request; connection failures and timeouts become `TransportError` naming `peer`."""
    try:
        return session.request(method, url, timeout=timeout, allow_redirects=allow_redirects, **kwargs)
    except requests.Timeout as exc:
        raise TransportError(f"{peer} at {url} did not answer within {timeout:g} s",
                             hint=f"check that the {peer} is running and reachable", code="timeout") from exc
    except requests.RequestException as exc:
        raise TransportError(f"cannot reach the {peer} at {url}: {exc.__class__.__name__}",
                             hint=f"check that the {peer} is running and reachable") from exc
