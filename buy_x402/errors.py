"""The exception tree and the exit-code enum.

Every failure the skill can report is a `BuyError` carrying a stable `code`, a message that names the
problem, a `hint` that names the fix, and structured `data`. Only `cli` turns them into exit codes
and text; everything below raises.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0                   # done (with --set-default: the agent now uses the model, verified)
    FAILED = 1               # nothing was bought, or an error left the purchase as it was
    USAGE = 2                # bad command line
    NOT_READY = 3            # purchase written but not Ready in time; the default was not touched
    DEFAULT_NOT_CHANGED = 4  # purchase Ready (or default set/restore asked) but the default is unchanged
    HANGUP = 129             # SIGHUP: stopped cleanly, as for Ctrl-C
    INTERRUPTED = 130        # Ctrl-C (SIGINT)
    TERMINATED = 143         # SIGTERM (e.g. `timeout`, a pod being stopped): stopped cleanly, as for Ctrl-C


class BuyError(Exception):
    """Base of every reported failure. `code` is stable and machine-readable."""

    code = "error"
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code:
            self.code = code
        self.data = dict(data or {})

    def __str__(self) -> str:
        return self.message


class Interrupted(BaseException):
    """A signal stopped the run (`shutdown` raises it in the main thread). A BaseException, like
    KeyboardInterrupt, so only cleanup code sees it on the way out. `data` carries facts a command
    wants reported anyway (e.g. a purchase that was already written)."""

    def __init__(self, signum: int, data: dict[str, Any] | None = None, note: str | None = None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.data = dict(data or {})
        self.note = note  # what was already done that the stop could not undo

    @property
    def exit_code(self) -> "ExitCode":
        return {1: ExitCode.HANGUP, 15: ExitCode.TERMINATED}.get(self.signum, ExitCode.INTERRUPTED)

    @property
    def name(self) -> str:
        return {1: "SIGHUP", 2: "SIGINT", 15: "SIGTERM"}.get(self.signum, f"signal {self.signum}")


class UsageError(BuyError):
    code = "usage"
    exit_code = ExitCode.USAGE


class ConfigError(BuyError):
    """Settings, service account or kubeconfig that cannot be used."""
    code = "config"


class TransportError(BuyError):
    """A peer could not be reached or did not answer in time."""
    code = "unreachable"


class KubeApiError(BuyError):
    """The Kubernetes API answered with a failure `Status`; branch on `reason`/`status_code`."""
    code = "kube_api"

    def __init__(self, message: str, *, status_code: int, reason: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code
        self.reason = reason
        self.data.update(status_code=status_code, reason=reason)


class SellerError(BuyError):
    """The seller did not answer with usable x402 payment requirements."""
    code = "seller"


class PaymentChoiceError(BuyError):
    """No payment option matches what was asked, or the asked amount contradicts the offer."""
    code = "payment_option"


class SignerError(BuyError):
    code = "signer"


class ChainError(BuyError):
    code = "chain"


class WalletError(BuyError):
    """The wallet cannot pay: balance short, token without code, missing allowance."""
    code = "wallet"


class X402BuyerError(BuyError):
    """The in-cluster x402-buyer is down or does not know the purchase."""
    code = "buyer"


class PurchaseError(BuyError):
    """A PurchaseRequest cannot be created or topped up as asked."""
    code = "purchase"


class PaymentFailed(BuyError):
    """The paid request did not succeed after the voucher was sent. `data.settlement` says whether it
    settled anyway."""
    code = "payment_failed"


class LiteLLMError(BuyError):
    code = "litellm"


class AgentConfigError(BuyError):
    """The agent's config (the file its runtime reads), its lock or its adoption record cannot be
    read or safely written."""
    code = "agent_config"


class NotReadyError(BuyError):
    """The purchase exists (and is funded) but did not become Ready within the timeout."""
    code = "not_ready"
    exit_code = ExitCode.NOT_READY


class DefaultNotChanged(BuyError):
    """The agent's default model was not changed: a guard, the canary or the write refused.

    `cause` is the underlying error; the agent's config is byte-for-byte as before.
    """
    code = "default_not_changed"
    exit_code = ExitCode.DEFAULT_NOT_CHANGED

    def __init__(self, message: str, *, cause: BuyError | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.cause = cause
        if cause is not None:
            self.data.setdefault("cause", {"code": cause.code, "message": cause.message})
