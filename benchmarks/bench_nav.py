"""V-IRL throughput: cities and routes generated per second, env steps per second (text and vision), verdicts/s.

Run: .venv/bin/python benchmarks/bench_nav.py   (prints figures; not a test)
"""
import time

import numpy as np

from sftrl.city import STYLES, make_city, make_route, route_record
from sftrl.nav import NavigationEnv, oracle_answer, verify_step
from sftrl.views import render_grid


def cities_per_second(n=20):
    "make_city over every style, fresh seeds."
    names = list(STYLES)
    start = time.perf_counter()
    for i in range(n): make_city(names[i % len(names)], seed=1000 + i)
    return n / (time.perf_counter() - start)


def routes_per_second(n=500):
    "make_route + route_record (official format) on an existing city: what a RouteSet does per new route."
    city, rng = make_city('home', seed=1), np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(n): route_record(make_route(city, 2 + i % 3, rng, f'r{i}'), city)
    return n / (time.perf_counter() - start)


def fresh_routes_per_second(n=60):
    "Routes of a new pool, cities included (20 routes per city, as the training split)."
    env = NavigationEnv.for_split('train', n_routes=n, seed=12345)
    start = time.perf_counter()
    for k in range(n): env.record(k)
    return n / (time.perf_counter() - start)


def env_steps_per_second(vision, n_episodes, resolution=224, split='train'):
    "Oracle episodes (reset + every position answered correctly); returns (steps/s, episodes/s)."
    env = NavigationEnv.for_split(split, vision=vision, resolution=resolution, n_routes=40)
    for k in range(40): env.record(k)            # generate routes and cities outside the timing
    steps, start = 0, time.perf_counter()
    for seed in range(n_episodes):
        env.reset(seed=seed)
        while True:
            _, reward, terminated, truncated, _ = env.step(oracle_answer(env.point, env.absolute_action))
            steps += 1
            if terminated or truncated: break
    elapsed = time.perf_counter() - start
    return steps / elapsed, n_episodes / elapsed


def verdicts_per_second(n=2000):
    "verify_step on a mix of correct, wrong, prose and broken answers, both modes."
    env = NavigationEnv.for_split('train', n_routes=5)
    env.reset(seed=0)
    point = env.point
    good = oracle_answer(point)
    texts = [good, good.replace(point.absolute_action, 'forward()'), 'Sure! ' + good + ' Bye.', '{"action": "stop()"}',
             "{'action': 'forward()',}", 'no idea', '{' * 500]
    out = {}
    for mode in ('fixed', 'official'):
        start = time.perf_counter()
        for i in range(n): verify_step(texts[i % len(texts)], point, mode=mode)
        out[mode] = n / (time.perf_counter() - start)
    return out


def grids_per_second(size, n=10):
    city = make_city('home', seed=7)
    route = make_route(city, 3, np.random.default_rng(0))
    start = time.perf_counter()
    for i in range(n): render_grid(city, route.waypoints[i % 3], 37.0 * i, size)
    return n / (time.perf_counter() - start)


if __name__ == '__main__':
    print(f"cities generated:             {cities_per_second():8.1f} /s   (all 10 styles, 7x7 intersections)")
    print(f"routes generated:             {routes_per_second():8.1f} /s   (route + official record, city cached)")
    print(f"routes of a fresh pool:       {fresh_routes_per_second():8.1f} /s   (cities included, 20 routes per city)")
    steps, episodes = env_steps_per_second(vision=False, n_episodes=200)
    print(f"text env (V-IRL-L):           {steps:8.1f} steps/s  {episodes:6.1f} episodes/s  (oracle answers)")
    for resolution in (112, 224):
        steps, episodes = env_steps_per_second(vision=True, n_episodes=6, resolution=resolution)
        print(f"vision env (V-IRL-VL) {resolution:3d} px: {steps:8.1f} steps/s  {episodes:6.1f} episodes/s  "
              f"(grid {2 * resolution + 5} px, one render per position)")
    for size in (112, 224, 448):
        print(f"view grid {size:3d} px per view:   {grids_per_second(size):8.1f} grids/s")
    for mode, rate in verdicts_per_second().items():
        print(f"verdicts ({mode:8s}):          {rate:8.0f} /s")
