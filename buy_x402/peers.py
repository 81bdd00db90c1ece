"""Clients of every peer, built from the settings and shared by the flows (one session per run)."""
from __future__ import annotations

import copy
from functools import cached_property
from typing import TYPE_CHECKING

import requests

from .http import make_session
from .result import Context
from .timings import Timings

if TYPE_CHECKING:
    from .agent.runtime import AgentConfig, AgentRuntime


class Peers:
    """Lazily built clients of every peer, sharing one HTTP session (connection reuse), and the run's
    `timings` (the flows that talk to the peers say which phase they are in)."""

    def __init__(self, ctx: Context, *, pool_size: int = 10) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._pool_size = pool_size
        self.timings = Timings()

    def sharing(self, ctx: Context) -> "Peers":
        """The same clients (those already built are shared, so build them first) reporting through `ctx`."""
        view = copy.copy(self)
        view.ctx = ctx
        return view

    def timings_report(self) -> dict[str, float]:
        """Seconds per phase of this run, its total, and `agent_cli`: the part the agent's own CLI took
        (its `hermes config set` and `hermes cron` runs), when it ran."""
        agent = self.__dict__.get("agent")  # built only if the run needed it
        return self.timings.report(agent_cli=getattr(agent, "cli_seconds", 0.0))

    @cached_property
    def session(self) -> requests.Session:
        return make_session(self.settings.user_agent, pool_size=self._pool_size)

    @cached_property
    def kube(self):
        from .kube import KubeClient, load_config
        return KubeClient(load_config(self.settings), session=self.session)

    @cached_property
    def signer(self):
        from .signer import SignerClient
        return SignerClient(self.session, self.settings.remote_signer_url)

    @cached_property
    def chain(self):
        from .chain import ChainClient
        return ChainClient(self.session, self.settings.erpc_url)

    @cached_property
    def buyer(self):
        from .buyer import BuyerClient
        return BuyerClient(self.session, self.settings.x402_buyer_url)

    @cached_property
    def agent(self) -> "AgentRuntime":
        """The runtime of the agent whose default model the skill switches."""
        from .agent import runtime_for
        return runtime_for(self.settings)

    @cached_property
    def agent_config(self) -> "AgentConfig":
        """The agent's config file, resolved once per run (every later step uses the same file)."""
        return self.agent.resolve()
