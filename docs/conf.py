"""Sphinx configuration of the sftrl site: `make docs` builds it into _build/site (docs/build.py).

The source folder is `nbs/`, as in any nbdev project: every notebook there is a page, `index.ipynb`
(the README) is the home page, and `nbdev_pages.py` beside this file reads the notebooks the way
nbdev's own site would. Notebooks are executed at build time by myst-nb, and the outputs are kept
in a jupyter-cache under `_build/` so that a rebuild re-runs only the notebooks whose code changed.
"""
import configparser
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))
settings = configparser.ConfigParser()
settings.read(ROOT / 'settings.ini')
meta = settings['DEFAULT']

project = meta['title']
author = meta['author']
copyright = meta['copyright']
release = meta['version']

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'nbdev_pages']
root_doc = 'index'
exclude_patterns = ['_*', '**/_*', '**/.ipynb_checkpoints', '*.md.bak', 'runs']   # runs/: caches the notebooks write

# nbdev: notebooks are read as nbdev shows them (docs/nbdev_pages.py).
nbdev_lib_name = meta['lib_name']
nbdev_slow_flags = meta.get('tst_flags', '').split()
nbdev_extra_pages = ['reproduce']
nbdev_figures = str(ROOT / 'figures')   # the home page's images and any study figure an experiment page shows
# Experiment notebooks run with the smoke preset (their pages say so): SFTRL_DOCS_SMOKE=0 leaves them unrun.
nbdev_run_experiments = os.environ.get('SFTRL_DOCS_SMOKE', '1') != '0'

# Execution: every notebook runs at build time, cached by its code in _build/jupyter_cache;
# a notebook that raises fails the build.
nb_execution_mode = 'cache'
nb_execution_cache_path = str(ROOT / '_build' / 'jupyter_cache')
nb_execution_timeout = 600
# The cache's database is created here, once, before `sphinx-build -j` starts its readers: two readers
# creating it at the same moment race (sqlite "table settings already exists" failed a CI run).
from jupyter_cache import get_cache as _get_cache  # noqa: E402
Path(nb_execution_cache_path).mkdir(parents=True, exist_ok=True)
_get_cache(nb_execution_cache_path).db
nb_execution_raise_on_error = True
# Experiment notebooks are committed without outputs; the build runs them with the `smoke` preset, as
# `sftrl reproduce --preset smoke` would (docs/nbdev_pages.py injects the parameters), into runs/smoke/.
# The kernels inherit this environment: one base-model cache for chapters and experiments (as `make test`),
# and one torch thread per kernel (`-j 2` runs two kernels at once; two threads each on 2 cores were ~4x slower).
os.environ.setdefault('SFTRL_RUNS', str(ROOT / 'runs'))
os.environ.setdefault('OMP_NUM_THREADS', '1')
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = 'gfm'  # `Markdown(...)` outputs hold tables
nb_output_stderr = 'remove'   # library progress bars and warnings on stderr (model loading, trainers) are not documentation

# Cross-references: a broken one is an error (make docs runs sphinx-build -W).
nitpicky = True
# Types from the standard library and third-party packages in signatures: their docs are not
# reachable offline (no intersphinx inventories), so only references to them are let through.
nitpick_ignore_regex = [
    ('py:class', r'(pathlib|collections|typing|fractions|argparse|random|numbers|enum)\..*'),
    ('py:class', r'(np|numpy|gym|gymnasium|spaces|PIL|Image|torch|transformers|datasets|trl|accelerate|pandas|filelock)\..*'),
]
autodoc_member_order = 'bysource'
autodoc_preserve_defaults = True    # `style=DEFAULT_STYLE`, not the repr of the dataclass
autodoc_inherit_docstrings = False  # gymnasium's own docstrings are not this site's (nor valid reST)
autodoc_typehints = 'signature'
add_module_names = False
python_display_short_literal_types = True

html_theme = 'furo'
html_title = f'{project} {release}'
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {'source_repository': meta['git_url'] + '/', 'source_branch': meta['branch'],
                      'source_directory': meta['nbs_path'] + '/'}
