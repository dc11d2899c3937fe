"""`minimind-tui serve [--host 127.0.0.1] [--port 8000] [-- app args]`: the dashboard in a web
browser, through textual-serve (`pip install "minimind-tui[serve]"`).

textual-serve starts `minimind-tui <app args>` for each browser tab, with Textual's web driver
talking to the page over a websocket. It has no authentication: whoever opens the page can start
runs and write files as you. So it listens on 127.0.0.1 unless told otherwise, and warns when
told; from a laptop, reach it through an SSH tunnel (the README shows how).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import shlex
import socket
import sys

from minimind.settings import SettingsError
from minimind_tui.cli import exit_codes
from minimind_tui.form.presets import DEFAULT_PRESET, load_settings

PROG = "minimind-tui serve"


def port_number(text: str) -> int:
    """A TCP port a browser can be sent to: 1 to 65535 (0 would pick one nobody is told)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def public_url(text: str) -> str:
    """An http(s) address with a host. The page prefixes its own paths with it: a trailing
    slash made them "//static/...", a blank page, and a bare word made every request fail."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an address such as http://localhost:8000, "
                                         f"got {text!r}")
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG, description="Serve the dashboard to a web browser (textual-serve).",
        epilog="Arguments after -- go to the app, as on the minimind-tui command line, e.g. "
               "minimind-tui serve --port 8000 -- --preset tiny. There is no authentication: "
               "keep the default host and use an SSH tunnel to watch from another machine.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default: 8000)")
    parser.add_argument("--public-url", metavar="URL", type=public_url,
                        help="the address the browser opens, when not http://HOST:PORT "
                             "(e.g. a tunnel to another local port)")
    return parser


def main(argv: list[str]) -> int:
    from minimind_tui.cli.main import SUBCOMMANDS, build_parser as build_app_parser
    from minimind_tui.cli.exit_codes import invalid
    from minimind_tui.cli.flags import overrides_from_args

    ours, app_args = split_app_args(argv)
    args = build_parser().parse_args(ours)
    if app_args and app_args[0] in SUBCOMMANDS:  # the app's parser gave its whole usage
        return invalid(f"{app_args[0]}: serve shows the dashboard, not a subcommand; to watch "
                       "a run in the browser, serve the dashboard and open it from the runs "
                       "view (F4, then w)", prog=PROG)
    app = build_app_parser().parse_args(app_args)  # a wrong app flag fails here, not per tab
    if app.no_ui or app.detach:
        return invalid("--no-ui trains headless; serve shows the dashboard", prog=PROG)
    overrides, untyped = overrides_from_args(app)
    if untyped:  # every tab would refuse them
        return invalid(*untyped, prog=PROG)
    try:  # the settings' own rules (--max_steps -3); what this machine lacks, a tab shows
        load_settings(app.preset or DEFAULT_PRESET, overrides)
    except SettingsError as e:
        return invalid(*e.problems, prog=PROG)
    if importlib.util.find_spec("textual_serve") is None:
        return invalid('textual-serve is not installed; pip install "minimind-tui[serve]"',
                       prog=PROG)

    from textual_serve.server import Server

    class Serving(Server):
        def request_exit(self) -> None:
            # The open tabs' apps are closed one by one: it can take seconds, said at once.
            print(f"\n{PROG}: stopping: closing the dashboards open in browsers…",
                  file=sys.stderr, flush=True)
            super().request_exit()

    command = shlex.join([sys.executable, "-m", "minimind_tui", *app_args])
    server = Serving(command, host=args.host, port=args.port, title="minimind-tui",
                    public_url=args.public_url or f"http://{url_host(args.host)}:{args.port}")
    try:
        # textual-serve announces "Serving ... on ..." before it binds: bind first.
        check_listenable(args.host, args.port)
        if not is_loopback(args.host):  # said once it is true
            print(f"{PROG}: warning: listening on {args.host}: anyone who can reach this "
                  "machine can open the dashboard, start runs and write files as you (there "
                  "is no authentication); prefer the default host and an SSH tunnel",
                  file=sys.stderr)
        server.serve()
    except OSError as e:  # the port is taken, or the address is not this machine's
        return invalid(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}", prog=PROG)
    return exit_codes.OK


def check_listenable(host: str, port: int) -> None:
    """OSError (EADDRINUSE, EADDRNOTAVAIL, ...) where the server could not listen."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        probe.bind(address)


def url_host(host: str) -> str:
    """The host as a URL names it: an IPv6 address in brackets (the page's assets and its
    websocket pointed at http://::1:8000/, which no browser can open)."""
    return f"[{host}]" if ":" in host else host


def split_app_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """serve's own arguments, and the app's after `--`."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False
