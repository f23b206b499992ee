"""The site: built from the notebooks with every warning an error (`make docs`), then read in headless
Chromium as a person would: every page loads with no console error and no request leaving 127.0.0.1,
every internal link and anchor resolves, every image loads. Screenshots of the home page and of the
GeneralPoints chapter are saved under _build/test_artifacts/ (or $SFTRL_TEST_ARTIFACTS).

Chromium is Debian's (`chromium`, `chromium-driver`), installed here with apt-get when missing and
running as root (as CI does); playwright drives it through `executable_path` and never downloads a browser.

Building the whole site executes every chapter again (minutes), and every experiment notebook with the `smoke`
preset (minutes more on a cold cache), so those tests are marked `site` and run by `make test-site`; the unit
suite (`make test`, CI) builds one chapter with the home page, and checks how an experiment page is rewritten
without running it.
"""
import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path('/usr/bin/chromium')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']
ARTIFACTS = Path(os.environ.get('SFTRL_TEST_ARTIFACTS', ROOT / '_build' / 'test_artifacts'))
PAGE_TIMEOUT_MS = 30_000
SERVE_SECONDS = 600


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_build = _load('sftrl_docs_build', ROOT / 'docs' / 'build.py')
nbdev_pages = _load('sftrl_nbdev_pages', ROOT / 'docs' / 'nbdev_pages.py')
SMOKE_NOTE = 'Smoke outputs: a pipeline check, not results'


def _notebook_pages() -> list[str]:
    "Page names the site must have: the home page, every numbered notebook and every experiment notebook."
    nbs = ROOT / 'nbs'
    found = sorted(nbs.glob('[0-9]*.ipynb')) + sorted((nbs / 'experiments').glob('[!_.]*.ipynb'))
    return ['index'] + [p.relative_to(nbs).with_suffix('').as_posix() for p in found]


def _placeholders(src: Path) -> None:
    "A one-line page for each notebook that a page of the partial site `src` links to and `src` lacks (reproduce.md -> 14_launch)."
    text = ''.join(p.read_text() for p in src.glob('*.md')) + ''.join(p.read_text() for p in src.glob('*.ipynb'))
    for name in set(re.findall(r'\]\(([\w-]+\.ipynb)\)', text)):
        if not (src / name).exists():
            nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f'# {name} (a placeholder)')]), src / name)


def _ensure_chromium() -> None:
    if CHROMIUM.exists(): return
    if os.geteuid() != 0:
        pytest.fail('Chromium is missing and this is not root: apt-get install -y chromium chromium-driver')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run(['apt-get', 'update', '-qq'], check=True, env=env, timeout=600)
    subprocess.run(['apt-get', 'install', '-y', '-qq', 'chromium', 'chromium-driver'], check=True, env=env, timeout=900)


class _Ids(html.parser.HTMLParser):
    "Every id and name attribute of a page: what a link's #fragment may point at."
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(v for k, v in attrs if k in ('id', 'name') and v)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('docs') / 'site'
    seconds = docs_build.build(out)
    print(f'site built in {seconds:.1f} s')
    return out


@pytest.fixture(scope='module')
def base_url(site):
    server = docs_build.serve(site, port=0, seconds=SERVE_SECONDS)
    yield f'http://127.0.0.1:{server.server_address[1]}/'
    server.deadline.cancel()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope='module')
def browser():
    _ensure_chromium()
    from playwright.sync_api import sync_playwright
    profile = tempfile.mkdtemp(prefix='sftrl-chromium-')
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
                viewport={'width': 1280, 'height': 900}, timeout=PAGE_TIMEOUT_MS)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _visit(context, url: str) -> dict:
    "Open `url`; return the page, its console errors, failed or blocked requests, broken images and links."
    page, problems = context.new_page(), []
    page.on('console', lambda m: m.type == 'error' and problems.append(f'console: {m.text}'))
    page.on('pageerror', lambda e: problems.append(f'page error: {e}'))
    page.on('requestfailed', lambda r: problems.append(f'request failed: {r.url} {r.failure}'))
    page.on('response', lambda r: r.status >= 400 and problems.append(f'HTTP {r.status}: {r.url}'))
    host = urlparse(url).netloc
    def only_local(route):
        if urlparse(route.request.url).netloc == host: return route.continue_()
        problems.append(f'left the site: {route.request.url}')
        route.abort()
    page.route('**/*', only_local)
    page.goto(url, wait_until='load')
    page.wait_for_load_state('networkidle')
    images = page.eval_on_selector_all('img', 'els => els.map(e => [e.currentSrc || e.src, e.complete && e.naturalWidth > 0])')
    links = page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)')
    return dict(page=page, problems=problems, images=images, links=links)


@pytest.mark.site
def test_every_notebook_has_a_page_in_reading_order(site):
    for name in _notebook_pages():
        assert (site / f'{name}.html').exists(), f'{name}.ipynb has no page in the site'
    sidebar = (site / 'index.html').read_text()
    chapters = [n for n in _notebook_pages()[1:] if '/' not in n]
    positions = [sidebar.find(f'href="{n}.html"') for n in chapters]
    assert all(p >= 0 for p in positions), 'a chapter is missing from the table of contents'
    assert positions == sorted(positions), 'the chapters are not listed in their numbered order'


@pytest.mark.site
def test_pages_load_cleanly_in_chromium(site, base_url, browser):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html'))
    assert {f'{n}.html' for n in _notebook_pages()} <= set(pages)
    ids, checked = {}, 0
    for name in pages:
        seen = _visit(browser, urljoin(base_url, name))
        if name in ('index.html', '02_points.html'): _screenshots(seen['page'], name)
        seen['page'].close()
        assert not seen['problems'], f'{name}: ' + '; '.join(seen['problems'])
        broken = [src for src, ok in seen['images'] if not ok]
        assert not broken, f'{name}: images that did not load: {broken}'
        for link in seen['links']:
            target, fragment = urldefrag(link)
            if not target.startswith(base_url): continue   # external: not followed offline
            if target not in ids: ids[target] = _fetch_ids(target)
            assert ids[target] is not None, f'{name}: broken link {link}'
            assert not fragment or fragment in ids[target], f'{name}: link to a missing anchor {link}'
            checked += 1
    assert checked > 100, f'only {checked} internal links were checked'


def _fetch_ids(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
            kind = response.headers.get_content_type()
    except OSError:
        return None
    parser = _Ids()
    if kind == 'text/html': parser.feed(body.decode('utf-8', 'replace'))
    return parser.ids


def _screenshots(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    page.screenshot(path=ARTIFACTS / f'{stem}.png')
    first_image = page.query_selector('article img')
    if first_image:
        first_image.scroll_into_view_if_needed()
        page.screenshot(path=ARTIFACTS / f'{stem}-first-image.png')


@pytest.mark.site
def test_experiment_pages_show_their_smoke_run_and_figure(site):
    "Every experiment page: the smoke note, the injected parameters, and the figure among the executed outputs."
    for name in _notebook_pages():
        if not name.startswith('experiments/'): continue
        page = (site / f'{name}.html').read_text()
        assert SMOKE_NOTE in page, f'{name}: no note on where its outputs come from'
        assert 'injected-parameters' in page, f'{name}: the smoke parameters are not shown'
        outputs = re.findall(r'<div class="cell_output docutils container">(.*?)</div>\s*</div>', page, re.S)
        assert any('<img' in o for o in outputs), f'{name}: no figure among the outputs'


@pytest.mark.site
def test_api_entries_and_cross_links(site):
    "nbdev's show_doc is rendered by autodoc, and backticked names in the prose link to those entries."
    points = (site / '02_points.html').read_text()
    for name in ('GeneralPointsEnv', 'verify', 'REWARDS'):
        assert f'id="sftrl.points.{name}"' in points, f'no API entry for sftrl.points.{name}'
    assert 'href="#sftrl.points.GeneralPointsEnv"' in points, 'the prose does not link to GeneralPointsEnv'
    assert 'href="00_core.html#sftrl.core.Verdict"' in points, 'no cross-page link to sftrl.core.Verdict'
    assert '#| export' not in points and '#| hide' not in points, 'nbdev directives leak into the page'


def test_the_home_page_and_a_chapter_build(tmp_path):
    "The build of CI's suite: the home page, the Reproduce page and one chapter, with its API entries and no warning."
    src = tmp_path / 'nbs'
    src.mkdir()
    for name in ('index.ipynb', 'reproduce.md', '00_core.ipynb'): shutil.copy(ROOT / 'nbs' / name, src)
    _placeholders(src)
    docs_build.build(tmp_path / 'site', source=src)
    core = (tmp_path / 'site' / '00_core.html').read_text()
    assert 'id="sftrl.core.Verdict"' in core and '#| export' not in core
    index = (tmp_path / 'site' / 'index.html').read_text()
    assert 'href="00_core.html"' in index   # the chapter is in the contents
    assert re.search(r'<img [^>]*src="_images/table[^"]*\.png"', index), 'the demo hand (figures/demo-vl/table.png) is not on the home page'


def _experiment_page(name: str, run: bool = True, figures: Path = ROOT / 'figures'):
    nb = nbformat.read(ROOT / 'nbs' / 'experiments' / f'{name}.ipynb', as_version=4)
    symbols = nbdev_pages.Symbols(ROOT / 'nbs' / 'experiments', 'sftrl')   # no chapter: nothing to link, quick
    return nbdev_pages.nbdev_to_myst(nb, symbols, f'experiments/{name}', None, set(), run, figures, '../../figures')


@pytest.mark.parametrize('name', [p.stem for p in sorted((ROOT / 'nbs' / 'experiments').glob('[!_.]*.ipynb'))])
def test_an_experiment_page_runs_the_smoke_preset(name):
    "Each experiment page runs with papermill's smoke parameters right after its `parameters` cell, under a note that says so."
    from sftrl.study import study_preset
    cells = _experiment_page(name).cells
    tags = [c.metadata.get('tags', []) for c in cells]
    at = next(i for i, t in enumerate(tags) if 'parameters' in t)
    injected = cells[at + 1].source
    assert 'injected-parameters' in tags[at + 1] and "preset = 'smoke'" in injected
    assert f"seeds = {list(range(study_preset('smoke').seeds))}" in injected and "'_build' / 'smoke-figures'" in injected
    note = cells[1].source   # under the title and what the paper reports
    assert SMOKE_NOTE in note and 'numbers mean nothing' in note
    if (ROOT / 'figures' / f'{name}.png').exists(): assert f'(../../figures/{name}.png)' in note
    else: assert 'No study figure of this notebook is in `figures/`' in note


def test_an_experiment_page_says_what_it_did_not_run_and_which_figure_it_shows(tmp_path):
    "Unrun (SFTRL_DOCS_SMOKE=0): no smoke parameters, execution off, and a note that says so; a figure in figures/ is shown with its CSV's preset."
    nb = _experiment_page('fig06_rule_ood', run=False)
    assert nb.metadata['mystnb'] == {'execution_mode': 'off'}
    assert not any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    assert 'Not run in this build' in nb.cells[1].source and SMOKE_NOTE not in nb.cells[1].source
    (tmp_path / 'fig06_rule_ood.png').write_bytes(b'')
    (tmp_path / 'fig06_rule_ood.csv').write_text('# preset: tiny\n# seeds: 0 1\ntask,value\ngp-l,1.0\n')
    note = _experiment_page('fig06_rule_ood', figures=tmp_path).cells[1].source
    assert '![fig06_rule_ood, preset tiny](../../figures/fig06_rule_ood.png)' in note


def test_a_broken_cross_reference_fails_the_build(tmp_path):
    "One page built on its own (the home page), with a reference to an object that does not exist."
    src = tmp_path / 'nbs'
    src.mkdir()
    shutil.copy(ROOT / 'nbs' / 'reproduce.md', src)
    index = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    index.cells.append(nbformat.v4.new_markdown_cell('See {py:func}`sftrl.points.no_such_function`.'))
    nbformat.write(index, src / 'index.ipynb')
    command = docs_build.sphinx_command(tmp_path / 'site', source=src)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0, 'a broken cross-reference did not fail the build'
    assert 'sftrl.points.no_such_function' in result.stderr


def test_the_table_of_contents_puts_the_paper_figures_before_the_extensions():
    toc = nbdev_pages.table_of_contents(ROOT / 'nbs', ['reproduce'])
    entries = [line for line in toc.splitlines() if line.startswith(('0', '1', '2', 'experiments/', 'reproduce'))]
    experiments = [e for e in entries if e.startswith('experiments/')]
    assert experiments[0] == 'experiments/fig01_virl_overall' and experiments[-1].startswith('experiments/ext_')
    assert entries.index('experiments/fig01_virl_overall') > entries.index('00_core') and entries[-1] == 'reproduce'
