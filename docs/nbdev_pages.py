"""Sphinx extension: read nbdev notebooks as pages, the way nbdev's own (Quarto) site would show them.

Hooked on `source-read`, it rewrites each notebook before myst-nb parses and executes it:

- nbdev directives become myst-nb cell tags: `#| hide` and `#| default_exp` -> `remove-cell`,
  `#| echo: false` -> `remove-input`, `#| output: false` -> `remove-output`, `#| eval: false` and
  the project's `tst_flags` (`#| slow`) -> `skip-execution`; the `#|` lines are dropped from the code shown.
- The API documentation nbdev adds with `show_doc` comes from autodoc: after each `#| export` cell, one
  entry per public name that cell defines (in the module's `__all__`), and an explicit `show_doc(x)` cell
  is replaced by the entry for `x`. Each module page opens with a `py:module` target.
- Backticked names in markdown cells and docstrings that name a documented sftrl object become
  cross-references (nbdev's backtick linking); other backticked text stays code.
- The home page (`index`) gets the site's table of contents: the numbered notebooks in order,
  then `experiments/`, then the other pages in the toctree below.
- An experiment notebook (`experiments/*`, committed without outputs) is run with the `smoke` preset,
  as `sftrl reproduce --preset smoke` runs it: a code cell after its `parameters` cell sets the preset's
  parameters (papermill's injected cell, shown), and a note under its title says that the outputs are a
  pipeline check whose numbers mean nothing, and whether a study figure of it is in `figures/`.
  `nbdev_run_experiments = False` (conf.py) leaves them unrun, and the note says so.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell
from docutils.parsers.rst import Parser
from docutils.utils import new_document
from sphinx.util.docutils import SphinxDirective

DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
SHOW_DOC = re.compile(r'^show_doc\(\s*([A-Za-z_][\w.]*)\s*(?:,[^\n]*)?\)\s*;?\s*$')
BACKTICK = re.compile(r'(?<![`\w])`([A-Za-z_][\w.]*)`(?!`)')
RST_BACKTICK = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')
RST_END_OK = set(' \t-.,:;!?\\/\'")]}>')
FENCE = re.compile(r'^(\s*)(```|~~~)')
EXPORTS = {'export', 'exports', 'exporti'}


def read_directives(source: str) -> tuple[dict[str, str], str]:
    "Split a code cell into its leading nbdev `#|` directives (name -> argument) and the code to show."
    lines, directives = source.splitlines(), {}
    while lines and (m := DIRECTIVE.match(lines[0])):
        directives[m[1]] = m[2]
        lines.pop(0)
    return directives, '\n'.join(lines)


def _public_members(cls: type) -> list[str]:
    "Members of `cls` that autodoc's `:members:` shows: its own public attributes with a docstring."
    names = []
    for name, value in vars(cls).items():
        if name.startswith('_'): continue
        func = getattr(value, '__func__', getattr(value, 'fget', value))
        if (callable(func) or isinstance(value, property)) and getattr(func, '__doc__', None): names.append(name)
    return names


class Symbols:
    "What the site documents: sftrl modules with a notebook, their `__all__`, and the classes' documented members."

    def __init__(self, nbs_path: Path, lib_name: str):
        self.lib_name, self.modules, self.full = lib_name, {}, {}  # full: dotted name -> kind
        for nb_path in sorted(nbs_path.rglob('*.ipynb')):
            if nb_path.name.startswith('_') or '.ipynb_checkpoints' in nb_path.parts: continue
            if name := default_exp(nbformat.read(nb_path, as_version=4)):
                self.modules[f'{lib_name}.{name}'] = importlib.import_module(f'{lib_name}.{name}')
        for mod_name, module in self.modules.items():
            self.full[mod_name] = 'module'
            for name in getattr(module, '__all__', []):
                obj = getattr(module, name)
                self.full[f'{mod_name}.{name}'] = _kind(obj)
                if inspect.isclass(obj):
                    for member in _public_members(obj): self.full[f'{mod_name}.{name}.{member}'] = 'member'

    def resolve(self, name: str, module: str | None) -> str | None:
        "The documented dotted name that `name` means on `module`'s page, or None when ambiguous or unknown."
        if name in self.full: return name
        if module and f'{module}.{name}' in self.full: return f'{module}.{name}'
        hits = [f'{mod}.{name}' for mod in self.modules if f'{mod}.{name}' in self.full]
        return hits[0] if len(hits) == 1 else None


def _kind(obj) -> str:
    if inspect.isclass(obj): return 'class'
    if callable(obj): return 'function'
    return 'data'


def default_exp(nb) -> str | None:
    "The module a notebook exports to (`#| default_exp name`), or None."
    for cell in nb.cells:
        if cell.cell_type == 'code':
            directives, _ = read_directives(cell.source)
            if 'default_exp' in directives: return directives['default_exp'].split()[0]
    return None


def _defined_names(code: str) -> list[str]:
    "Top-level names a code cell defines, in order."
    try: tree = ast.parse(code)
    except SyntaxError: return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for t in ast.walk(target):
                    if isinstance(t, ast.Name): names.append(t.id)
    return names


def autodoc_block(full: str, kind: str, exclude: list[str], no_index: bool) -> str:
    "The MyST autodoc directive that documents `full`."
    if kind == 'data':  # a target only: autodata would print the value type's docstring (dict's, str's)
        module, name = full.rsplit('.', 1)
        options = [f':module: {module}'] + ([':no-index:'] if no_index else [])
        return '\n'.join(['```{rst-block}', f'.. py:data:: {name}', *(f'   {o}' for o in options), '```'])
    directive = {'class': 'autoclass', 'function': 'autofunction'}.get(kind)
    if kind == 'member':
        owner, name = full.rsplit('.', 1)
        module = importlib.import_module(owner.rsplit('.', 1)[0])
        value = vars(getattr(module, owner.rsplit('.', 1)[1]))[name]
        directive = 'autoproperty' if isinstance(value, property) else 'automethod'
    options = []
    if kind == 'class': options.append(':members:')
    if kind == 'class' and exclude: options.append(':exclude-members: ' + ', '.join(exclude))
    if no_index: options.append(':no-index:')
    # rst-block: autodoc writes reStructuredText, which a MyST directive would read as Markdown
    return '\n'.join(['```{rst-block}', f'.. {directive}:: {full}', *(f'   {o}' for o in options), '```'])


def link_backticks(markdown: str, symbols: Symbols, module: str | None) -> str:
    "Turn backticked names of documented objects into MyST cross-references, leaving code fences alone."
    out, fence = [], None
    for line in markdown.splitlines(keepends=True):
        if m := FENCE.match(line):
            fence = None if fence == m[2] else (fence or m[2])
            out.append(line); continue
        if fence is None:
            line = BACKTICK.sub(lambda m: _xref(m, symbols, module, '{{py:obj}}`{name} <{full}>`'), line)
        out.append(line)
    return ''.join(out)


def _xref(match, symbols: Symbols, module: str | None, template: str) -> str:
    full = symbols.resolve(match[1], module)
    return template.format(name=match[1], full=full) if full else match[0]


def _show_doc_targets(nb, symbols: Symbols, module: str | None) -> set[str]:
    "Dotted names the notebook documents explicitly with `show_doc(x)`."
    targets = set()
    for cell in nb.cells:
        if cell.cell_type != 'code': continue
        for line in read_directives(cell.source)[1].splitlines():
            if (m := SHOW_DOC.match(line)) and (full := symbols.resolve(m[1], module)): targets.add(full)
    return targets


def _code_cell(cell, module, symbols, explicit, slow_flags):
    "The cells that replace one code cell: itself with tags, a show_doc's autodoc entry, or an export cell and its entries."
    directives, code = read_directives(cell.source)
    tags = list(cell.metadata.get('tags', []))
    if 'hide' in directives or 'default_exp' in directives: tags.append('remove-cell')
    if directives.get('echo') == 'false': tags.append('remove-input')
    if directives.get('output') == 'false': tags.append('remove-output')
    if directives.get('eval') == 'false' or slow_flags & set(directives): tags.append('skip-execution')
    lines = [l for l in code.splitlines() if l.strip()]
    shown = [SHOW_DOC.match(l) for l in lines]
    if lines and all(shown) and 'hide' not in directives:
        fulls = [symbols.resolve(m[1], module) for m in shown]
        if all(fulls):
            return [new_markdown_cell('\n\n'.join(_entry(full, symbols, module, explicit) for full in fulls))]
    cell.source = code
    if tags: cell.metadata['tags'] = list(dict.fromkeys(tags))
    cells = [cell]
    if EXPORTS & set(directives) and module and 'hide' not in directives:
        entries = [_entry(f'{module}.{name}', symbols, module, explicit)
                   for name in dict.fromkeys(_defined_names(code))
                   if name in getattr(symbols.modules.get(module), '__all__', []) and f'{module}.{name}' not in explicit]
        if entries: cells.append(new_markdown_cell('\n\n'.join(entries)))
    return cells


def _entry(full: str, symbols: Symbols, module: str | None, explicit: set[str]) -> str:
    kind = symbols.full[full]
    exclude = [name.rsplit('.', 1)[1] for name in explicit if name.rsplit('.', 1)[0] == full]
    return autodoc_block(full, kind, exclude, no_index=not full.startswith(f'{module}.'))


def smoke_parameters() -> str:
    "The cell the site build runs after an experiment's `parameters` cell: what `run_experiment` passes for `smoke`."
    from sftrl.presets import study_preset
    seeds = list(range(study_preset('smoke').seeds))
    return '\n'.join([
        "# Injected by the site build, as `sftrl reproduce --preset smoke` injects it",
        "from sftrl.driver import ROOT",
        "preset = 'smoke'",
        f"seeds = {seeds!r}",
        "figures_dir = ROOT / '_build' / 'smoke-figures'   # not figures/: no result",
        "root = ROOT / 'runs'                              # runs/smoke/"])


def study_figure(name: str, figures: Path) -> tuple[str, str] | None:
    "The file name of the figure `sftrl reproduce` wrote for experiment `name` into `figures`, and the preset its CSV names; or None."
    png, csv = figures / f'{name}.png', figures / f'{name}.csv'
    if not png.exists(): return None
    meta = dict(l[2:].split(': ', 1) for l in csv.read_text().splitlines() if l.startswith('# ')) if csv.exists() else {}
    return png.name, meta.get('preset', 'unknown')


def smoke_note(name: str, executed: bool, figure: tuple[str, str] | None, figures_link: str = '../../figures') -> str:
    "The note under an experiment page's title: where its outputs come from, and where the paper's numbers are."
    from sftrl.presets import study_preset
    smoke = study_preset('smoke')
    paper = ("This extension is not in the paper." if name.startswith('ext_')
             else "What the paper reports for this figure is in the paragraph above.")
    if executed:
        title = 'Smoke outputs: a pipeline check, not results'
        runs = (f"The outputs below come from the site build, which ran this notebook with the `smoke` preset (the cell "
                f"after `parameters`, as `sftrl reproduce --preset smoke` sets it): the smallest models, trained for a few "
                f"steps, {smoke.seeds} seed, {smoke.eval_episodes} episodes a point. They show that the notebook runs end "
                f"to end and draws its figure; **their numbers mean nothing**, and none of them is to be compared with the "
                f"paper's. {paper}")
    else:
        title = 'Not run in this build'
        runs = (f"This build did not run the notebook (`SFTRL_DOCS_SMOKE=0`): the page shows its code with no outputs, "
                f"and no figure. `sftrl reproduce --preset smoke --only {name} --figures _build/smoke-figures` runs it. {paper}")
    if figure:
        file, preset = figure
        found = (f"The figure `sftrl reproduce` last wrote to `figures/{file}` (preset `{preset}`, from its CSV):"
                 f"\n\n![{name}, preset {preset}]({figures_link}/{file})")
    else:
        found = (f"No study figure of this notebook is in `figures/` yet: the `tiny` study has not been run to the end "
                 f"on this project's machine (see {{doc}}`/reproduce`).")
    return f"```{{admonition}} {title}\n:class: warning\n\n{runs}\n\n{found}\n```"


def _smoke_run(cells: list, nb, name: str, executed: bool, figures: Path, figures_link: str) -> list:
    "An experiment notebook's cells with the smoke parameters after its `parameters` cell and the note after its title."
    out = []
    for cell in cells:
        out.append(cell)
        if len(out) == 1 and cell.cell_type == 'markdown':
            out.append(new_markdown_cell(smoke_note(name, executed, study_figure(name, figures), figures_link)))
        if executed and 'parameters' in cell.metadata.get('tags', []):
            out.append(new_code_cell(smoke_parameters(), metadata={'tags': ['injected-parameters']}))
    # myst-nb's per-notebook settings: a smoke training cell may take minutes beside other work on 2 cores
    nb.metadata['mystnb'] = {'execution_timeout': 1800} if executed else {'execution_mode': 'off'}
    return out


def nbdev_to_myst(nb, symbols: Symbols, docname: str, toc: str | None, slow_flags: set[str],
                  run_experiments: bool = True, figures: Path = Path('figures'), figures_link: str = '../figures'):
    """Rewrite one nbdev notebook into the notebook myst-nb renders (see the module docstring).

    `figures` is the repository's figures/ folder and `figures_link` the way to it from the page's folder:
    the home page's `figures/...` images and an experiment page's study figure point there."""
    name = default_exp(nb)
    module = f'{symbols.lib_name}.{name}' if name else None
    explicit = _show_doc_targets(nb, symbols, module)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'markdown':
            cell.source = link_backticks(cell.source, symbols, module)
            if docname == 'index': cell.source = re.sub(r'(!\[[^\]]*\]\()figures/', rf'\g<1>{figures_link}/', cell.source)
            cells.append(cell)
            if module and len(cells) == 1: cells.append(new_markdown_cell(f'```{{py:module}} {module}\n```'))
        elif cell.cell_type == 'code':
            cells += _code_cell(cell, module, symbols, explicit, slow_flags)
        else:
            cells.append(cell)
    if toc: cells.append(new_markdown_cell(toc))
    if docname.startswith('experiments/'):
        cells = _smoke_run(cells, nb, docname.split('/', 1)[1], run_experiments, figures, figures_link)
    nb.cells = cells
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nb.metadata.setdefault('language_info', {'name': 'python'})
    return nb


def table_of_contents(nbs_path: Path, extra: list[str]) -> str:
    "The hidden toctrees of the home page: numbered notebooks in order, experiment notebooks, then `extra` pages."
    def pages(folder, pattern):   # the paper's figures before the extensions (ext_*), as sftrl.driver.experiments orders them
        found = sorted(folder.glob(pattern), key=lambda p: (p.stem.startswith('ext_'), p.stem))
        return [p.relative_to(nbs_path).with_suffix('').as_posix() for p in found]
    blocks = [('Chapters', pages(nbs_path, '[0-9]*.ipynb')), ('Experiments', pages(nbs_path / 'experiments', '[!_.]*.ipynb')),
              ('Running it', extra)]
    return '\n\n'.join(f'```{{toctree}}\n:hidden:\n:caption: {caption}\n\n' + '\n'.join(entries) + '\n```'
                       for caption, entries in blocks if entries)


def _source_read(app, docname: str, source: list[str]) -> None:
    path = Path(app.env.doc2path(docname))
    if path.suffix != '.ipynb': return
    nb = nbformat.reads(source[0], as_version=4)
    toc = table_of_contents(Path(app.srcdir), app.config.nbdev_extra_pages) if docname == app.config.root_doc else None
    figures = Path(app.confdir, app.config.nbdev_figures).resolve()
    link = Path(os.path.relpath(figures, path.parent)).as_posix()   # from the page's folder, wherever the sources are
    nb = nbdev_to_myst(nb, app.nbdev_symbols, docname, toc, set(app.config.nbdev_slow_flags),
                       app.config.nbdev_run_experiments, figures, link)
    source[0] = nbformat.writes(nb)


def _builder_inited(app) -> None:
    app.nbdev_symbols = Symbols(Path(app.srcdir), app.config.nbdev_lib_name)


def _process_docstring(app, what, name, obj, options, lines) -> None:
    "nbdev's backtick linking in docstrings: `name` -> :py:obj: when documented, else literal code."
    symbols = app.nbdev_symbols
    module = next((m for m in sorted(symbols.modules, key=len, reverse=True) if name.startswith(m + '.')), None)
    for i, line in enumerate(lines):
        lines[i] = RST_BACKTICK.sub(lambda m: _rst_inline(m, symbols, module), line)


def _rst_inline(match, symbols: Symbols, module: str | None) -> str:
    "One backticked span of a docstring as reStructuredText: a cross-reference or a literal, escaped to stand next to a word."
    full = symbols.resolve(match[1], module) if re.fullmatch(r'[A-Za-z_][\w.]*', match[1]) else None
    text = f':py:obj:`{match[1]} <{full}>`' if full else '``' + match[1] + '``'
    before, after = match.string[match.start() - 1:match.start()], match.string[match.end():match.end() + 1]
    return ('\\ ' if before and before.isalnum() else '') + text + ('\\ ' if after and after not in RST_END_OK else '')


class RstBlock(SphinxDirective):
    """The content parsed as reStructuredText, like MyST's `eval-rst`.

    `eval-rst` pads the text with one blank line per line of the page before it to keep line numbers,
    and myst-nb numbers cell N's lines from N * 10000: a notebook page took seconds per block."""
    has_content = True

    def run(self):
        document = new_document(str(self.env.doc2path(self.env.docname)), self.state.document.settings)
        document.reporter = self.state.document.reporter
        Parser().parse('\n'.join(self.content), document)
        for node in document:
            if node['names']: self.state.document.note_explicit_target(node, node)
        return list(document.children)


def setup(app):
    app.add_config_value('nbdev_lib_name', 'sftrl', 'env')
    app.add_config_value('nbdev_slow_flags', [], 'env')
    app.add_config_value('nbdev_extra_pages', [], 'env')
    app.add_config_value('nbdev_run_experiments', True, 'env')
    app.add_config_value('nbdev_figures', 'figures', 'env')
    app.add_directive('rst-block', RstBlock)
    app.connect('builder-inited', _builder_inited)
    app.connect('source-read', _source_read)
    app.connect('autodoc-process-docstring', _process_docstring)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
