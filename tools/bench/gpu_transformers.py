"""Peer baseline for tools/bench/gpu-baseline.mjs, run on the GPU machine (torch + transformers there).

Loads the same Hugging Face folder Kiln decodes, in bfloat16 on cuda:0, and measures transformers'
eager greedy decode at batch 1 (the same prompt ids, the same number of new tokens), and the device's
copy bandwidth (a 1 GiB device-to-device copy: bytes read + written per second), which bounds decode.
Prints one JSON object.

Usage: python3 tools/bench/gpu_transformers.py MODEL_DIR PROMPT_IDS_JSON NEW_TOKENS
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def copy_bandwidth(reps=20):
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    return 2 * n * reps / (start.elapsed_time(end) / 1e3)


def timed_generate(model, ids, new_tokens):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main():
    model_dir, prompt_file, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    prompt = json.load(open(prompt_file))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda").eval()
    ids = torch.tensor([prompt], device="cuda")
    with torch.inference_mode():
        timed_generate(model, ids, 8)  # warm-up
        one, _ = timed_generate(model, ids, 1)
        full, out = timed_generate(model, ids, new_tokens)
    print(json.dumps({
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "eagerFirstTokenMs": one * 1e3,
        "eagerMsPerToken": (full - one) * 1e3 / (new_tokens - 1),
        "eagerOutputIds": out[0, len(prompt):].tolist(),
        "copyBandwidthBytesPerSecond": copy_bandwidth(),
    }))


if __name__ == "__main__":
    main()
