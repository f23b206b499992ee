"""Speed of the GeneralPoints world (sftrl.cards): the solver (cold and cached), dealing per split,
and card-table rendering. Prints figures; run with `python benchmarks/bench_cards.py`."""
import time
from itertools import combinations_with_replacement

import numpy as np

from sftrl.cards import (ID_RULE, OOD_RULE, Card, _card_image, _solutions, deal_hand, is_solvable,
                         render_table, solve)


def per_call(fn, items):
    "Seconds per call of `fn` over `items`: (median, max, mean)."
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return np.median(times), np.max(times), np.mean(times)


def bench_solver():
    hands = [list(h) for h in combinations_with_replacement(range(1, 14), 4)]
    for name, fn in [('solve', solve), ('is_solvable', is_solvable)]:
        _solutions.cache_clear()
        cold = per_call(fn, hands)
        warm = per_call(fn, hands)
        print(f'{name:12} cold over all {len(hands)} hands of 1..13: median {cold[0]*1e3:.2f} ms, '
              f'worst {cold[1]*1e3:.2f} ms, mean {cold[2]*1e3:.2f} ms; cached: median {warm[0]*1e6:.1f} µs')
    distinct = [h for h in hands if len(set(h)) == 4]
    _solutions.cache_clear()
    print(f'{"":12} cold, four distinct numbers (24 orderings): median {per_call(solve, distinct)[0]*1e3:.2f} ms')


def bench_dealing(n=3000):
    splits = {'ID mixed': dict(), 'rule OOD': dict(rule=OOD_RULE, face_card=True), 'ID black': dict(suits='black'),
              'visual OOD red': dict(suits='red'), 'rule OOD black': dict(rule=OOD_RULE, face_card=True, suits='black'),
              'ID no replacement': dict(replacement=False)}
    for name, kw in splits.items():
        _solutions.cache_clear()
        rates = []
        for _ in range(2):  # the same hands twice: first with an empty solver cache, then with a full one
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            for _ in range(n): deal_hand(rng, **kw)
            rates.append(n / (time.perf_counter() - t0))
        print(f'deal_hand {name:18}: {rates[0]:8.0f} hands/s (cold solver cache), {rates[1]:8.0f} hands/s (cached)')


def bench_render(n=40):
    rng = np.random.default_rng(0)
    hands = [deal_hand(rng) for _ in range(n)]
    for resolution in (1200, 224):
        _card_image.cache_clear()
        t0 = time.perf_counter()
        for hand in hands: render_table(hand, resolution)
        cold = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for hand in hands: render_table(hand, resolution)
        warm = n / (time.perf_counter() - t0)
        print(f'render_table {resolution:4}x{resolution}: {cold:7.1f} images/s with new cards, '
              f'{warm:7.1f} images/s with cached cards')


if __name__ == '__main__':
    bench_solver()
    bench_dealing()
    bench_render()
