"""Worst-case verdict time over a hostile corpus: GeneralPoints and V-IRL, both modes.

Every input of the corpus (deep parentheses, one character repeated to the answer cap, non-ASCII digits, huge
integers, `**` chains, duplicate JSON keys, NaN/inf, lone surrogates, 1 MB inputs, …) is judged in every mode and
modality; each verdict's CPU time is the best of `--repeats` tries (scheduler noise only ever adds time). Prints the
slowest input per task family and mode, and the longest feedback and revision prompt seen. The goal (issue 22):
under 10 ms CPU for every input.

Run: .venv/bin/python benchmarks/bench_hostile.py [--repeats 5] [--top 3]   (prints figures; not a test)
"""
import argparse
import time

from sftrl.cards import Card, solve
from sftrl.nav import NavigationEnv, verify_step
from sftrl.points import MAX_ANSWER_CHARS, verify

CAP = MAX_ANSWER_CHARS
MB = 1_000_000
HAND = [Card('3', 'S'), Card('8', 'H'), Card('A', 'D'), Card('A', 'C')]   # numbers [3, 8, 1, 1]
SOLUTIONS = tuple(solve([3, 8, 1, 1]))
CHARS = ['(', ')', '[', ']', '{', '}', '"', "'", '9', '0', '٣', '２', '+', '*', ' ', '\n', 'x', ',', ':', '\\', '\ud800', '\x00']


def gp_answer(formula, cards="['3', '8', 'A', 'A']"):
    return f'{{"cards": {cards}, "number": [3, 8, 1, 1], "formula": "{formula}",}}'


def _fit(unit: str, n: int = CAP, room: int = 80) -> str:
    "`unit` repeated to fill `n` characters less `room` (for the JSON around it)."
    return unit * max(1, (n - room) // len(unit))


def common_corpus() -> dict[str, str]:
    "Raw hostile texts, for any verifier: single characters to the cap and to 1 MB, deep JSON, NaN/inf, surrogates."
    corpus = {}
    for c in CHARS:
        corpus[f'{c!r} x cap'] = c * CAP
        corpus[f'{c!r} x 1MB'] = c * MB
    corpus.update({
        'deep json lists at cap': '[' * (CAP // 2) + ']' * (CAP // 2),
        'deep json objects at cap': _fit('{"a": ', CAP, 0),
        'NaN list at cap': '[' + _fit('NaN, ', CAP, 10) + 'Infinity]',
        'NaN/inf fields': '{"formula": NaN, "cards": [Infinity, -Infinity], "action": NaN, "current observation": Infinity}',
        'huge int in json at cap': '{"x": ' + '9' * (CAP - 10) + '}',
        'huge float in json at cap': '{"x": 1e' + '9' * (CAP - 12) + '}',
        'lone surrogates json': '{"formula": "\\ud800\\udfff", "action": "\\ud800"}',
        'escapes at cap': '{"action": "' + _fit('\\u0041', CAP, 20) + '"}',
        'whitespace mix at cap': _fit(' \n\t\r', CAP, 0),
        'backslashes in string at cap': '"' + _fit('\\\\', CAP, 2) + '"',
        'unterminated string at cap': '"' + 'x' * (CAP - 1),
    })
    return corpus


def gp_corpus() -> dict[str, str]:
    "GeneralPoints answers whose formula (or field) is hostile, each within the cap, plus the common corpus."
    formulas = {
        'open parens': _fit('('), 'close parens': _fit(')'), 'balanced parens': '(' * 8100 + '3*8*1*1' + ')' * 8100,
        'empty parens': _fit('()'), 'reversed parens': _fit(')('), 'unclosed after number': _fit('3*('),
        'digits': _fit('9'), 'arabic-indic digits': _fit('٣'), 'fullwidth digits': _fit('２'),
        'mixed digits': _fit('٣８'), 'leading zeros': _fit('0') + '3*8*1*1', 'many small numbers': _fit('1+'),
        'many numbers spaced': _fit('1 '), 'operators': _fit('+'), 'power chain': _fit('2**') + '2',
        'star pairs': _fit('**'), 'division chain': _fit('8/') + '3', 'spaces': _fit(' '),
        'surrogates': _fit('\ud800'), 'equals signs': _fit('='), 'number operator number': _fit('1+1-'),
        'invalid numbers': _fit('13+'), 'hand numbers repeated': _fit('3*8*1*1+'),
        'solution prefix junk': '3*8*' + _fit('('),
    }
    corpus = {f'formula: {k}': gp_answer(v) for k, v in formulas.items()}
    corpus.update({
        'formula 1MB': gp_answer('1+' * (MB // 2) + '1'),
        'duplicate formula keys at cap': '{' + _fit('"formula": "1+1", ', CAP, 40) + '"formula": "3*8*1*1"}',
        'duplicate cards keys at cap': '{' + _fit('"cards": ["A"], ', CAP, 40) + '"formula": "3*8*1*1"}',
        'many formula keys (regex)': _fit('"formula": "'), 'many single-quoted keys': _fit("'formula': '"),
        'many cards keys': _fit('"cards": ['), 'many number keys': _fit('"number": ['),
        'cards list at cap': '{"cards": [' + _fit("'A', ") + "'A'], \"formula\": \"3*8*1*1\",}",
        'cards json list at cap': '{"cards": [' + _fit('"A", ') + '"A"], "formula": "3*8*1*1"}',
        'huge int cards': '{"formula": "3*8*1*1", "cards": [' + '1' * (CAP - 60) + ']}',
        'nan formula': '{"formula": NaN, "cards": NaN}', 'inf formula': '{"formula": Infinity}',
        'list formula deep': '{"formula": ' + '[' * 5000 + ']' * 5000 + '}',
    })
    corpus.update(common_corpus())
    return corpus


def nav_corpus() -> dict[str, str]:
    "V-IRL answers whose fields are hostile, each within the cap, plus the common corpus."
    def answer(obs='You observe an intersection', instr='Turn left to face north.', action='forward()'):
        return f'{{"current observation": "{obs}", "current instruction": "{instr}", "action": "{action}",}}'
    corpus = {
        'intersection words at cap': answer(obs=_fit('intersection ')),
        'long instruction at cap': answer(instr=_fit('Turn left to face north. ')),
        'long action at cap': answer(action=_fit('forward()')),
        'many action keys': _fit('"action": "'), 'many single-quoted action keys': _fit("'action': '"),
        'bare action keys': _fit('action:'), 'transaction keys': _fit('transaction:'),
        'duplicate action keys at cap': '{' + _fit('"action": "stop()", ', CAP, 40) + '"action": "forward()"}',
        'trailing commas at cap': '{"action": "forward()"' + _fit(',', CAP, 40) + '}',
        'observation list': '{"current observation": ["intersection"], "action": "x"}',
        'observation list at cap': '{"current observation": [' + _fit('"intersection", ') + '"x"], "action": "x"}',
        'observation object at cap': '{"current observation": {' + _fit('"a": 1, ') + '"b": 2}, "action": "x"}',
        'observation nested at cap': '{"current observation": ' + '[' * 8000 + ']' * 8000 + ', "action": "x"}',
        'action 1MB': answer(action='x' * MB), 'json 1MB': '{"action": "forward()",' + ' ' * MB + '}',
        'braces then text at cap': '{' * (CAP // 2) + '}' * (CAP // 2),
    }
    corpus.update(common_corpus())
    return corpus


def cpu_seconds(fn, repeats: int) -> float:
    best = float('inf')
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def gp_cases(mode):
    "(label, verdict function) for each GeneralPoints setting: GP-L and GP-VL."
    for vision in (False, True):
        yield ('GP-VL' if vision else 'GP-L'), lambda text: verify(text, HAND, vision=vision, mode=mode, solutions=SOLUTIONS)


def nav_cases(mode):
    "(label, verdict function) at a straight point and an intersection, absolute and relative actions."
    env = NavigationEnv.for_split('train', n_routes=3)
    env.reset(seed=0, options={'route_idx': 1})
    rail = env.task.rail
    for name, point in (('straight', rail[0]), ('intersection', next(p for p in rail if p.intersection))):
        for absolute in (True, False):
            yield f'{name}/{"abs" if absolute else "rel"}', \
                lambda text, point=point, absolute=absolute: verify_step(text, point, absolute_action=absolute, mode=mode)


def worst(corpus, cases, repeats):
    "Rows (seconds, input name, setting, feedback length, revision prompt length), slowest first."
    rows = []
    for setting, judge in cases:
        for name, text in corpus.items():
            verdict = judge(text)
            rows.append((cpu_seconds(lambda: judge(text), repeats), name, setting, len(verdict.feedback),
                         len(verdict.revision_prompt())))
    return sorted(rows, reverse=True)


def main(repeats: int = 5, top: int = 3):
    families = [('GeneralPoints', ('exact', 'official'), gp_corpus(), gp_cases),
                ('V-IRL', ('fixed', 'official'), nav_corpus(), nav_cases)]
    summary = []
    for family, modes, corpus, cases in families:
        for mode in modes:
            rows = worst(corpus, cases(mode), repeats)
            feedback, prompt = max(r[3] for r in rows), max(r[4] for r in rows)
            print(f'{family} {mode}: {len(corpus)} inputs x {len(rows) // len(corpus)} settings; '
                  f'longest feedback {feedback:,} chars, longest revision prompt {prompt:,} chars')
            for seconds, name, setting, *_ in rows[:top]:
                print(f'    {seconds * 1e3:7.2f} ms  {setting:18} {name}')
            summary.append((family, mode, rows[0][0], rows[0][1], feedback, prompt))
    print('\nworst verdict (CPU ms, best of %d) | family | mode | input | longest feedback | longest revision prompt' % repeats)
    for family, mode, seconds, name, feedback, prompt in summary:
        print(f'{seconds * 1e3:7.2f} | {family:13} | {mode:8} | {name} | {feedback:,} | {prompt:,}')
    return summary


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--top', type=int, default=3)
    args = parser.parse_args()
    main(args.repeats, args.top)
