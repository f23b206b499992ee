"""Speed of the tiny policies on this machine: training tokens/s and MFU against a measured matmul
peak, and generation tokens/s with the KV cache. Prints figures; asserts nothing."""
import time

import numpy as np
import torch
from transformers.utils import logging

from sftrl.compute import flops_per_token
from sftrl.models import build_text_policy, build_tokenizer, build_vision_policy, count_parameters, task_texts

logging.set_verbosity_error()


def matmul_peak_gflops(n=1024, repeats=20):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats): a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def train_tokens_per_second(policy, batch, steps=5):
    model = policy.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        loss = model(**batch, labels=batch['input_ids']).loss
        loss.backward(); optimizer.step(); optimizer.zero_grad()
    step()
    start = time.perf_counter()
    for _ in range(steps): step()
    model.eval()
    return batch['input_ids'].numel() * steps / (time.perf_counter() - start)


def generate_tokens_per_second(policy, batch, new_tokens=64):
    start = time.perf_counter()
    with torch.no_grad():
        out = policy.model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True)
    generated = (out.shape[1] - batch['input_ids'].shape[1]) * out.shape[0]
    return generated / (time.perf_counter() - start)


def main():
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}")
    peak = matmul_peak_gflops()
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    texts = task_texts(n=50)
    tokenizer = build_tokenizer(texts, vocab_size=512)
    prompts = [tokenizer.apply_chat_template([{'role': 'user', 'content': t}], tokenize=False, add_generation_prompt=True)
               for t in texts[:8]]
    tokenizer.padding_side = 'left'
    for size in ('smoke', 'tiny'):
        text = build_text_policy(tokenizer, size)
        batch = tokenizer(prompts, return_tensors='pt', padding=True, truncation=True, max_length=256)
        n = count_parameters(text.model)
        tps = train_tokens_per_second(text, batch)
        print(f"text {size} ({n / 1e6:.2f} M): train {tps:,.0f} tokens/s, {tps * flops_per_token(n) / 1e9:.2f} GFLOP/s "
              f"(MFU {tps * flops_per_token(n) / 1e9 / peak:.1%}); generate {generate_tokens_per_second(text, batch):,.0f} tokens/s (batch 8, KV cache)")
        vision = build_vision_policy(tokenizer, size)
        image = np.zeros((224, 224, 3), np.uint8)
        chat = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'Which cards?'}]}]
        vtext = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        vbatch = vision.processor(images=[image] * 4, text=[vtext] * 4, return_tensors='pt')
        n = count_parameters(vision.model)
        tps = train_tokens_per_second(vision, {k: v for k, v in vbatch.items()})
        print(f"vision {size} ({n / 1e6:.2f} M, {vbatch['input_ids'].shape[1]} tokens a sample incl. image): "
              f"train {tps:,.0f} tokens/s (MFU {tps * flops_per_token(n) / 1e9 / peak:.1%}); "
              f"generate {generate_tokens_per_second(vision, vbatch):,.0f} tokens/s (batch 4)")


if __name__ == '__main__':
    main()
