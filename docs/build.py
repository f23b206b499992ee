"""Build the sftrl site offline, or serve a built one on 127.0.0.1 for a bounded time.

    python docs/build.py [SITE]              # build into SITE (default _build/site); warnings are errors
    python docs/build.py --serve 600 [SITE]  # serve SITE on http://127.0.0.1:8000 for at most 600 s

`make docs` runs the first. Notebook outputs are cached in _build/jupyter_cache (see docs/conf.py).
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / '_build' / 'site'


def sphinx_command(site: Path, source: Path = ROOT / 'nbs') -> list[str]:
    "The one sphinx-build call: pages from `source` (nbs/), config docs/, every warning an error, every page re-read."
    # -E re-reads every page (cheap: outputs come from the notebook cache), so a change to the reader
    # in docs/ always shows; -n (nitpicky) makes a broken cross-reference a warning, -W an error.
    return [sys.executable, '-m', 'sphinx', '-b', 'html', '-E', '-n', '-W', '--keep-going', '-j', '2', '-q',
            '-c', str(ROOT / 'docs'), '-d', str(site.parent / f'{site.name}_doctrees'), str(source), str(site)]


# Lines the notebook kernels print on every start (ipykernel 7 on TCP, nbclient's INFO log): not warnings
# of the build, so they are not shown; everything else sphinx-build prints is.
KERNEL_CHATTER = re.compile(r'^(\[IPKernelApp\] WARNING \| Kernel is running over TCP'
                            r'|# \S+ \S+ INFO traitlets client\.py:\d+ -- Executing notebook with kernel'
                            r'|\s*$)')


def build(site: Path = SITE, source: Path = ROOT / 'nbs') -> float:
    "Build the site into `site`; return the wall time in seconds. Raises CalledProcessError on any warning."
    start = time.perf_counter()
    process = subprocess.Popen(sphinx_command(site, source), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if not KERNEL_CHATTER.match(line): print(line, end='', file=sys.stderr)
    if process.wait(): raise subprocess.CalledProcessError(process.returncode, process.args)
    return time.perf_counter() - start


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


def serve(site: Path, port: int = 0, seconds: float = 300) -> http.server.ThreadingHTTPServer:
    "Serve `site` on 127.0.0.1:`port` (0: any free port) from a daemon thread; it shuts itself down after `seconds`."
    if not (site / 'index.html').exists(): raise FileNotFoundError(f'no site at {site}: run make docs first')
    server = http.server.ThreadingHTTPServer(('127.0.0.1', port), functools.partial(_QuietHandler, directory=str(site)))
    server.timeout = 10
    threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.2}, daemon=True).start()
    server.deadline = threading.Timer(seconds, server.shutdown)
    server.deadline.daemon = True   # never keeps the process alive
    server.deadline.start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('site', nargs='?', type=Path, default=SITE)
    parser.add_argument('--serve', type=float, metavar='SECONDS', help='serve the built site on 127.0.0.1 for SECONDS')
    parser.add_argument('--port', type=int, default=8000)
    args = parser.parse_args(argv)
    if args.serve:
        server = serve(args.site.resolve(), args.port, args.serve)
        print(f'serving {args.site} on http://127.0.0.1:{server.server_address[1]}/ for {args.serve:g} s')
        time.sleep(args.serve)
        return
    seconds = build(args.site.resolve())
    print(f'site built in {seconds:.1f} s: {args.site / "index.html"}')


if __name__ == '__main__':
    main()
