"""Command line: argparse, dispatch, the single error → exit-code funnel, rendering.

The only module that prints and the only one that knows exit codes. Commands return `Result`s or
raise `BuyError`s; `main` turns either into text on stderr/stdout (or exactly one JSON object on
stdout with `--json`) and an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from typing import IO, Any, Sequence

from . import __version__, shutdown
from .amounts import check_auth_ttl, check_money_syntax
from .errors import BuyError, ExitCode, Interrupted, UsageError
from .inputs import MAX_DIGITS, finite_number
from .result import Context, Result
from .urls import redact, shown

# Commands whose --json output is not the envelope: the host's `obol model status` decodes
# `list --json` as the bare array of rows. On failure their stdout stays empty (the error goes to stderr).
BARE_JSON = {"list": "purchases"}
# The skill's only third-party packages (import name → distribution name), for a plain `python3`.
RUNTIME_PACKAGES = {"requests": "requests", "yaml": "PyYAML", "urllib3": "requests"}
BOOL_TRUE = {"1", "true", "yes", "on"}
BOOL_FALSE = {"0", "false", "no", "off"}

EPILOG = """exit codes:
  0    done (with --set-default: the agent now uses the model, verified)
  1    failed: nothing was bought, or an error left the purchase as it was
  2    usage error
  3    purchase written but not Ready within --timeout; the agent default was not touched
  4    purchase Ready (or default set/restore asked) but the default was NOT changed
  129  stopped by SIGHUP, cleanly
  130  interrupted (Ctrl-C), cleanly: the agent's config as before
  143  stopped by SIGTERM, cleanly: the agent's config as before"""
REMOVE_EPILOG = """exit codes:
  0    removed: the PurchaseRequest is gone (with --revoke: every unspent voucher cancelled, checked on chain)
  1    failed: the message says what, if anything, changed (nothing before the default or the chain was touched)
  2    usage error
  3    deleted but still there after --timeout (the controller is still draining it): re-run to keep waiting
  4    the agent's default is this purchase's model and the previous one could not be put back: nothing removed
  129  stopped by SIGHUP, cleanly
  130  interrupted (Ctrl-C), cleanly: the agent's config as before
  143  stopped by SIGTERM, cleanly: the agent's config as before"""


def boolish(text: str) -> bool:
    value = text.strip().lower()
    if value in BOOL_TRUE:
        return True
    if value in BOOL_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def whole(minimum: int, maximum: int):
    """An argparse type for whole numbers in [minimum, maximum], in ASCII digits."""
    def parse(text: str) -> int:
        raw = text.strip()
        if len(raw) > MAX_DIGITS or not raw.isascii() or not raw.isdigit():
            raise argparse.ArgumentTypeError(f"expected a whole number, got {shown(text, 40)}")
        value = int(raw)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected a number <= {maximum}, got {shown(raw, 40)}")
        return value
    return parse


MAX_FLAG_COUNT = 2500            # the PurchaseRequest's largest pool (CRD spec.count maximum)
MAX_SECONDS = 86400.0            # a day: longer waits are a mistake, and 1e308 breaks socket timeouts
positive_int = whole(1, MAX_FLAG_COUNT)
non_negative_int = whole(0, MAX_FLAG_COUNT)


def seconds(text: str) -> float:
    """Seconds: a plain finite number above 0 and at most a day (no nan, inf, exponent or sign)."""
    try:
        return finite_number(text, minimum=0.0, maximum=MAX_SECONDS, what="seconds")
    except UsageError:
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and at most {MAX_SECONDS:g}, as a plain "
                                         f"number (e.g. 30), got {shown(text, 40)}") from None


def _checked_text(check):
    """An argparse type that keeps the text once `check` accepts it; its UsageError becomes argparse's."""
    def parse(text: str) -> str:
        try:
            check(text)
        except UsageError as err:
            raise argparse.ArgumentTypeError(f"{err.message}; {err.hint}") from None
        return text
    parse.__doc__ = check.__doc__
    return parse


auth_ttl = _checked_text(check_auth_ttl)      # seconds (ASCII digits) or 'never'; applied by `amounts`
money = _checked_text(check_money_syntax)     # an amount's syntax; its scale needs the offer (after the probe)


class Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` instead of exiting, so the funnel renders it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")


def build_parser() -> Parser:
    parser = Parser(prog="buy.py", description="Buy paid LLM inference over x402 and adopt it as this "
                    "agent's model, safely.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"buy-x402 {__version__}")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(name: str, handler: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kw)
        p.set_defaults(handler=handler)
        return p

    p = add("buy", "buy:run", "buy pre-signed x402 vouchers for a seller's model and publish it as paid/<model>",
            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="purchase name (the PurchaseRequest; re-using it tops the pool up)")
    p.add_argument("--endpoint", required=True, help="seller offer URL, e.g. https://seller/services/qwen")
    p.add_argument("--model", required=True, help="the seller's model id; published as paid/<id>")
    p.add_argument("--budget", type=money, help="most to spend: atomic units (1500000), token units (1.5), '1.5 USDC' or '$1.50'")
    p.add_argument("--count", type=positive_int, help="number of vouchers (requests) to pre-sign")
    p.add_argument("--token", help="pay with this token symbol (filters the seller's options)")
    p.add_argument("--network", help="pay on this chain (name, alias or eip155:<id>)")
    p.add_argument("--payment-option", type=whole(1, 1000), metavar="N", help="pick the seller's Nth payment option")
    p.add_argument("--auto-refill", nargs="?", const=True, type=boolish, metavar="BOOL",
                   help="let `process` top the pool up when it runs low")
    p.add_argument("--refill-threshold", type=non_negative_int, metavar="N")
    p.add_argument("--refill-count", type=positive_int, metavar="N")
    p.add_argument("--cost-cap", type=money, metavar="AMOUNT", help="highest price per request auto-refill may pay")
    p.add_argument("--max-total", type=money, metavar="AMOUNT",
                   help="spend cap: the most this purchase may ever sign, first batch included (needs --auto-refill)")
    p.add_argument("--max-spend-per-day", type=money, metavar="AMOUNT",
                   help="spend cap: the most this purchase may sign in any 24 h (needs --auto-refill)")
    p.add_argument("--auth-ttl", type=auth_ttl, metavar="SECONDS|never", help="voucher lifetime (default 30 days, at least 600 s)")
    p.add_argument("--timeout", type=seconds, default=180.0, help="seconds to wait for Ready (default 180)")
    p.add_argument("--force", action="store_true", help="sign even if the balance does not cover the vouchers")
    p.add_argument("--set-default", nargs="?", const=True, default=False, type=boolish, metavar="BOOL",
                   help="once Ready, adopt paid/<model> as this agent's primary model (verified)")
    p.add_argument("--no-canary", action="store_true", help="skip the one paid test request before adopting")
    _json_flag(p)

    p = add("default", "default:run", "show, set or restore the agent's default model")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    d = dsub.add_parser("show", help="the model the agent uses now and where it came from")
    _json_flag(d)
    d = dsub.add_parser("set", help="adopt a model already selectable in LiteLLM, with the same guards")
    d.add_argument("model")
    d.add_argument("--no-canary", action="store_true", help="skip the paid test request")
    _json_flag(d)
    d = dsub.add_parser("restore", help="put back the default the last adoption replaced")
    _json_flag(d)
    _json_flag(p)

    p = add("probe", "probe:run", "show every payment option of an x402 seller")
    p.add_argument("url")
    p.add_argument("--model", help="model id to ask for (inference)")
    p.add_argument("--type", choices=["inference", "http", "agent"], default="inference")
    p.add_argument("--method", help="HTTP method for --type http (default GET)")
    _json_flag(p)

    p = add("list", "listing:run_list", "one row per purchase, with live pool numbers")
    _json_flag(p)
    p = add("status", "listing:run_status", "one purchase in detail")
    p.add_argument("name")
    _json_flag(p)

    p = add("process", "process:run", "auto-refill reconcile and default guardian (the cron entry)")
    p.add_argument("name", nargs="?")
    p.add_argument("--all", action="store_true", help="every purchase")
    _json_flag(p)
    p = add("maintain", "process:run_maintain", "alias of `process --all`")
    _json_flag(p)
    p = add("refill", "refill:run", "top a purchase's pool up now (the refill `process` makes at the threshold), "
            "within its spend caps")
    p.add_argument("name")
    p.add_argument("--count", type=positive_int, metavar="N", help="vouchers to sign (default: its auto-refill count)")
    _json_flag(p)

    p = add("schedule", "schedule:run", "ensure (or --remove) the Hermes cron job that runs `process --all`")
    p.add_argument("--remove", action="store_true")
    _json_flag(p)

    p = add("balance", "balance:run", "the wallet's balance of each known token")
    p.add_argument("--chain")
    _json_flag(p)

    for name, help_text in (("pay", "one paid request to an x402 URL"),
                            ("pay-agent", "one paid chat with an x402 agent, streamed")):
        p = add(name, "pay:run_pay" if name == "pay" else "pay:run_pay_agent", help_text)
        p.add_argument("url")
        p.add_argument("--type", choices=["inference", "http"], default="inference" if name == "pay-agent" else "http")
        p.add_argument("--method", help="HTTP method (default GET for http, POST for inference)")
        p.add_argument("--data", help="request body (JSON for inference)")
        p.add_argument("--message", help="chat message (inference)")
        p.add_argument("--model", help="model id (inference)")
        p.add_argument("--token")
        p.add_argument("--network")
        p.add_argument("--payment-option", type=whole(1, 1000), metavar="N")
        p.add_argument("--auth-ttl", type=auth_ttl, metavar="SECONDS|never")
        p.add_argument("--timeout", type=seconds)
        _json_flag(p)

    # --- go and siwx (issue 11: paying directly) ---------------------------------------------------
    p = add("go", "go:run", "find an x402 offer's kind (agent, chat, http) and pay it the right way")
    p.add_argument("url")
    p.add_argument("--message", help="chat message (chat/agent offers); without it nothing is paid")
    p.add_argument("--data", help="request body (JSON chat request, or the HTTP offer's body)")
    p.add_argument("--method", help="HTTP method for an HTTP offer (default POST with --data, else GET)")
    p.add_argument("--model", help="model id (default: the one the offer advertises, else auto)")
    p.add_argument("--token")
    p.add_argument("--network")
    p.add_argument("--payment-option", type=positive_int, metavar="N")
    p.add_argument("--timeout", type=seconds)
    _json_flag(p)
    p = add("siwx", "siwx:run", "sign in with the wallet (EIP-4361) to a wallet-gated resource")
    p.add_argument("url")
    p.add_argument("--fetch", action="store_true", help="send the signed request and print the answer")
    p.add_argument("--method", help="HTTP method (default GET)")
    _json_flag(p)

    # -- purchase lifecycle and money truth (remove, audit) --
    p = add("remove", "remove:run", "stop a purchase: restore the agent's previous model if it uses this one, "
            "delete the PurchaseRequest and wait until it is gone; --revoke cancels its unspent vouchers on chain",
            epilog=REMOVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="purchase name (the PurchaseRequest)")
    p.add_argument("--revoke", action="store_true",
                   help="cancel every unspent voucher on chain first (a transaction per voucher; the wallet pays gas in ETH)")
    p.add_argument("--force", action="store_true",
                   help="remove even when the agent's default is this model and the previous one cannot be put back")
    p.add_argument("--timeout", type=seconds, default=60.0, help="seconds to wait until it is gone (default 60)")
    _json_flag(p)
    p = add("audit", "audit:run", "every voucher's state on chain (settled, cancelled, unused, expired) against the "
            "x402-buyer's count")
    p.add_argument("name", nargs="?", help="one purchase (default: all)")
    _json_flag(p)

    p = add("env", "env:run", "the resolved settings (secrets masked)")
    _json_flag(p)
    return parser


class Output:
    """The process's streams; all text leaves through here."""

    def __init__(self, stdout: IO[str], stderr: IO[str]) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.tty = bool(getattr(stderr, "isatty", lambda: False)())
        self._progress_last: dict[str, int] = {}
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        """Shown at once on stderr, and kept for the JSON object."""
        self.warnings.append(text)
        self.err(f"warning: {text}")

    def err(self, text: str) -> None:
        print(redact(text), file=self.stderr, flush=True)

    def line(self, text: str) -> None:
        """One line on stdout at once (streamed output)."""
        print(redact(text), file=self.stdout, flush=True)

    def progress(self, label: str, done: int, total: int) -> None:
        if self.tty:
            width = 30
            filled = width * done // max(total, 1)
            end = "\n" if done >= total else ""
            self.stderr.write(f"\r  {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
            self.stderr.flush()
        elif done == total or done % 50 == 0:
            if self._progress_last.get(label) != done:
                self._progress_last[label] = done
                self.err(f"  {label} {done}/{total}")


def _envelope(result: Result, warnings: list[str]) -> dict[str, Any]:
    env: dict[str, Any] = {"command": result.command, "exit_code": int(result.exit_code)}
    env.update(result.data)
    env["warnings"] = warnings + [w for w in result.warnings if w not in warnings]
    if result.error is not None:
        env["error"] = _error_dict(result.error)
    return env


def _error_dict(err: BuyError) -> dict[str, Any]:
    out: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.hint:
        out["hint"] = err.hint
    if err.data:
        out["data"] = err.data
    return out


def _error_text(err: BuyError) -> str:
    text = f"error: {err.message}"
    if err.hint:
        text += f"\n  fix: {err.hint}"
    return text


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None, environ: dict[str, str] | None = None) -> int:
    out = Output(stdout or sys.stdout, stderr or sys.stderr)
    args_list = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args_list
    with shutdown.install(restore=argv is not None):  # argv None: this is buy.py's own process
        result = _run(args_list, out, environ)
        shutdown.finishing()
        if result is None:
            return ExitCode.OK
        signum = shutdown.received()
        if signum is not None and (result.error is None or result.error.code != "interrupted"):
            # a signal held until a critical step ended, or that came while the cleanup was running
            result = _interrupted(result.command, Interrupted(signum, result.data), out)
        try:
            return render(result, out, json_mode)
        except BrokenPipeError:  # stdout's reader went away (`| head`): nothing more can be said there
            _silence(out.stdout)
            return int(result.exit_code)


def _run(args_list: list[str], out: Output, environ: dict[str, str] | None) -> Result | None:
    """Parse, dispatch, and turn whatever the command raised into a Result; None after --help."""
    command = next((a for a in args_list if not a.startswith("-")), "")
    show_traceback = "--traceback" in args_list
    try:
        parser = build_parser()
        if not args_list or args_list in (["-h"], ["--help"]):
            parser.print_help(out.stdout)
            return None
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help / --version inside a subcommand print and exit 0
            if exc.code:
                raise UsageError(f"buy.py: exited {exc.code}") from None
            return None
        if not getattr(args, "handler", None):
            raise UsageError("no command given", hint="see `buy.py --help`")
        from . import settings as settings_mod
        ctx = Context(settings=settings_mod.load(environ),
                      notify=out.err, warn=out.warn, progress=out.progress,
                      stream=out.line)
        module_name, func_name = args.handler.split(":")
        handler = getattr(importlib.import_module(f"buy_x402.commands.{module_name}"), func_name)
        return handler(ctx, args)
    except Interrupted as exc:
        return _interrupted(command, exc, out)
    except KeyboardInterrupt:  # signals not routed through `shutdown` (not the main thread)
        return _interrupted(command, Interrupted(2), out)
    except BuyError as err:
        if show_traceback:
            traceback.print_exc(file=out.stderr)
        return Result(command=command, exit_code=err.exit_code, error=err)
    except RecursionError as exc:  # input nested too deeply for a parser: a refusal, not a crash
        return Result(command=command, exit_code=ExitCode.FAILED,
                      error=BuyError(f"an input is nested too deeply to be read ({exc.__class__.__name__})",
                                     code="too_deep", hint="check the file or the answer named above"))
    except Exception as exc:  # a bug: fail loudly, in one line; never turn it into success
        if isinstance(exc, ModuleNotFoundError) and exc.name in RUNTIME_PACKAGES:  # not a bug: a bare python3
            return Result(command=command, exit_code=ExitCode.FAILED, error=BuyError(
                f"buy.py needs the Python package {RUNTIME_PACKAGES[exc.name]}, which {sys.executable} does not "
                "have: pip install requests PyYAML", code="missing_dependency"))
        if show_traceback:
            traceback.print_exc(file=out.stderr)
        return Result(command=command, exit_code=ExitCode.FAILED,
                      error=BuyError(f"internal error: {exc.__class__.__name__}: {str(exc)[:300]}", code="internal",
                                     hint="this is a bug in buy-x402: re-run with --traceback and report the output"))


def _interrupted(command: str, exc: Interrupted, out: Output) -> Result:
    """The run stopped on a signal; `exc.data` keeps what was already done (e.g. a written purchase)."""
    out.err(f"interrupted ({exc.name})")
    message = f"interrupted by {exc.name}; every change in progress was undone"
    if exc.note:
        message = f"interrupted by {exc.name}; {exc.note}"
    elif exc.data:
        message = f"interrupted by {exc.name}; what was already done is reported above"
    return Result(command=command, data=exc.data, exit_code=exc.exit_code,
                  error=BuyError(message, code="interrupted", data={"signal": exc.name}))


def _silence(stream: IO[str]) -> None:
    """Point a closed stdout at /dev/null so the interpreter's final flush does not fail loudly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def render(result: Result, out: Output, json_mode: bool) -> int:
    from .render import render_text
    if json_mode and result.command in BARE_JSON:
        if result.error is None:
            print(redact(json.dumps(result.data[BARE_JSON[result.command]], default=str)), file=out.stdout)
        else:
            out.err(_error_text(result.error))
        return int(result.exit_code)
    if json_mode:
        print(redact(json.dumps(_envelope(result, out.warnings), default=str)), file=out.stdout)
        if result.error is not None:
            out.err(_error_text(result.error))
        return int(result.exit_code)
    for warning in result.warnings:
        if warning not in out.warnings:
            out.err(f"warning: {warning}")
    text = render_text(result) if result.data else ""
    if text:
        print(redact(text), file=out.stdout)
    if result.error is not None:
        out.err(_error_text(result.error))
    return int(result.exit_code)
