"""`minimind-tui serve`: the dashboard in a real headless browser (Debian's Chromium driven by
Playwright), and the refusals and warnings around it."""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minimind_tui.cli.main import main

CLI = [sys.executable, "-m", "minimind_tui"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# As root in a sandbox with no network: no Chromium sandbox, no background connections. WebGL
# (which textual-serve's terminal draws with) runs on SwiftShader, Chromium's CPU renderer.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]

needs_textual_serve = pytest.mark.skipif(
    importlib.util.find_spec("textual_serve") is None,
    reason='textual-serve is not installed (pip install -e ".[serve]")')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited with {server.returncode}: "
                                 f"{server.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"serve did not listen on port {port} within {seconds:.0f} s")


@needs_textual_serve
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                    reason="playwright is not installed (pip install playwright; the browser "
                           "is Debian's chromium, never `playwright install`)")
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_the_dashboard_renders_in_a_headless_browser(tmp_path):
    """The page loads, the app starts behind it and draws the settings form: its text arrives
    over the websocket and the screenshot shows it. MINIMIND_SCREENSHOT_DIR=docs/screenshots
    keeps the screenshot for the README."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "MINIMIND_TUI_PRESETS": str(tmp_path / "presets")}
    server = subprocess.Popen([*CLI, "serve", "--port", str(port), "--", "--preset", "tiny"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)  # its group holds the app processes too
    shot = Path(os.environ.get("MINIMIND_SCREENSHOT_DIR", tmp_path)) / "browser.png"
    try:
        wait_for_port(port, server)
        received = bytearray()  # what the app sent the page: its screen, as terminal output
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: received.extend(
                frame if isinstance(frame, bytes) else frame.encode())))
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            deadline = time.monotonic() + 120
            # The Problems panel says this once the form is drawn and validated.
            while b"ready to start" not in received and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert b"ready to start" in received, "the app did not draw its form in 120 s"
            assert b"hidden_size" in received and b"Start F9" in received  # F5 reloads the page
            page.evaluate("new Promise(done => requestAnimationFrame(() => "
                          "requestAnimationFrame(done)))")  # the frame after the last bytes
            page.screenshot(path=shot)
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
        try:  # an app process the server left behind
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    # Closing the apps takes seconds: Ctrl+C is answered at once.
    assert "minimind-tui serve: stopping: closing the dashboards open in browsers" in err
    colours = Image.open(shot).convert("RGB").getcolors(1 << 20)
    assert len(colours) > 50, "the screenshot is blank: the terminal was not drawn"


@needs_textual_serve
def test_serve_warns_when_listening_beyond_this_machine(monkeypatch, capsys):
    from textual_serve.server import Server

    served = []
    monkeypatch.setattr(Server, "serve", lambda self: served.append(self.host))
    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 0
    assert served == ["0.0.0.0"]
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine" in \
        capsys.readouterr().err
    # 192.0.2.1 is a documentation address, never this machine's: it said "listening on" it
    # first, then that it cannot listen there.
    proc = subprocess.run([*CLI, "serve", "--host", "192.0.2.1", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "warning" not in proc.stderr
    assert "error: cannot listen on 192.0.2.1:" in proc.stderr


@needs_textual_serve
def test_a_taken_port_is_refused_before_serving_is_announced(capsys):
    """A second `serve` on the same port printed "Serving ... on http://..." and "Press
    Ctrl+C to quit", then the error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "Serving" not in out + err and "Ctrl+C" not in out + err
    assert err.startswith(f"minimind-tui serve: error: cannot listen on 127.0.0.1:{port}: ")


@needs_textual_serve
@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_an_ipv6_host_is_bracketed_in_the_pages_addresses():
    """`--host ::1` gave the page http://::1:PORT/ and ws://::1:PORT/ws: no browser opens
    those, so the page never connected back."""
    import urllib.request

    port = free_port()
    server = subprocess.Popen([*CLI, "serve", "--host", "::1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://[::1]:{port}/", timeout=5).read().decode()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.2)
    finally:
        server.terminate()
        server.communicate(timeout=60)
    assert f"ws://[::1]:{port}/ws" in page and "://::1:" not in page


@pytest.mark.parametrize("argv, message", [
    (["serve", "--", "--no-ui"], "minimind-tui serve: error: --no-ui trains headless"),
    (["serve", "--", "--preset", "nope"], "minimind-tui serve: error: unknown preset 'nope'"),
    # A value the settings' rules refuse: every tab showed it as a problem, while serving.
    (["serve", "--", "--max_steps", "-3"], "minimind-tui serve: error: train.max_steps: must "
                                           "be ≥ 0"),
    # A subcommand: the app's parser printed its whole usage and "unrecognized arguments".
    (["serve", "--", "watch", "out/x"], "minimind-tui serve: error: watch: serve shows the "
                                        "dashboard, not a subcommand"),
])
def test_serve_refuses_app_arguments_that_cannot_show_a_dashboard(argv, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(message)


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_serve_takes_only_a_port_a_browser_can_be_sent_to(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", port])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"argument --port: expected a port from 1 to 65535, got {port!r}")


def test_serve_takes_only_a_public_url_a_page_can_use(capsys):
    """A bare word served HTTP 500 for every page; a trailing slash made the page's own paths
    "//static/...", a blank page. Both while the server said it was serving."""
    from minimind_tui.cli.serve import public_url

    for bad in ("notaurl", "ftp://host/", "http://"):
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--public-url", bad])
        assert exit_.value.code == 2 and capsys.readouterr().err.rstrip().endswith(
            f"argument --public-url: expected an address such as http://localhost:8000, "
            f"got {bad!r}")
    assert public_url("http://127.0.0.1:8745/") == "http://127.0.0.1:8745"
    assert public_url("https://example.org/tunnel/") == "https://example.org/tunnel"


def test_serve_without_textual_serve_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "textual_serve", None)  # find_spec then finds nothing
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == ('minimind-tui serve: error: textual-serve is not '
                                       'installed; pip install "minimind-tui[serve]"\n')
