"""The vision foundation on this machine: how fast caption pairs are drawn (per kind), how long the
smoke vision base takes to build (text base included, tower stage and caption stage), and what it reads. Prints figures; asserts nothing.

    python benchmarks/bench_base_vision.py [--preset smoke|tiny] [--threads N] [--cache DIR]
"""
import argparse
import time

import numpy as np
import torch
from transformers.utils import logging

from sftrl.base import base_corpus, pretrain_base
from sftrl.base_vision import VISION_BASE_PRESETS, CaptionPairs, pretrain_vision_base, probe_vision_base
from sftrl.models import policy_size

logging.set_verbosity_error()


def pairs_per_second(kind: str, image_size: int, n: int = 64) -> float:
    data = CaptionPairs(n, image_size, seed=0, mixture={kind: 1.0}, documents=base_corpus(20, seed=0))
    data[0]
    start = time.perf_counter()
    for i in range(1, n): data[i]
    return (n - 1) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--preset', default='smoke', choices=sorted(VISION_BASE_PRESETS))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--cache', default='runs/base')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = VISION_BASE_PRESETS[args.preset]
    size = policy_size(config.text.size).image_size
    print(f"torch threads: {torch.get_num_threads()}; images {size}x{size}")
    for kind in ('cards', 'view', 'text'):
        print(f"  {kind:>5} items: {pairs_per_second(kind, size):7.1f} /s")
    start = time.perf_counter()
    pretrain_base(config.text, cache_dir=args.cache, progress=False)
    text_s = time.perf_counter() - start
    start = time.perf_counter()
    vision = pretrain_vision_base(config, cache_dir=args.cache, progress=False)
    vision_s = time.perf_counter() - start
    print(f"{args.preset} text base: {text_s:.0f} s; vision base on it: {vision_s:.0f} s "
          f"(the tower's own {config.tower.max_steps} steps, then {config.max_steps} caption steps of {config.batch_size}; "
          f"0 s means both were in the cache)")
    print(probe_vision_base(vision, n=50).round(3).to_string(index=False))


if __name__ == '__main__':
    main()
