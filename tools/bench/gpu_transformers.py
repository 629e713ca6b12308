"""Peer baseline for tools/bench/gpu-baseline.mjs, run on the GPU machine (torch + transformers there).

Loads the same Hugging Face folder Kiln decodes, in bfloat16 on cuda:0, and measures, greedy, with the
same prompt ids and the same number of new tokens:

- the device's copy bandwidth (a 1 GiB device-to-device copy: bytes read + written per second), which
  bounds decode;
- transformers' eager `generate` at batch 1 and at a large batch (--batch-prompts: one prompt per row, all
  of one length, so no padding);
- the same with a static cache plus torch.compile: `generation_config.cache_implementation = "static"`,
  with which generate() compiles its decoding step (compile_config: inductor, "reduce-overhead"), warmed up on
  the same shapes first (two full generations per batch size), so that compile time is excluded. Batch 1
  runs before the large batch: a new batch size makes a new cache and a new compilation, and the cache
  made for N new tokens is reused (reset) for the 1-token runs.

Decode ms/step = (time of N new tokens - time of 1) / (N - 1); output tok/s of the decode steps = batch /
ms/step (the issue's table); end-to-end tok/s = batch x N / time of N (prefill included). Each phase
reports an "error" instead of its figures when it fails, and the others still run. Progress goes to stderr;
the last line of stdout is one JSON object.

With --partial FILE, the JSON object so far is also written to FILE after every phase, so that a caller
that has to stop this script early still gets the phases that finished.

Usage: python3 tools/bench/gpu_transformers.py MODEL_DIR PROMPT_IDS_JSON NEW_TOKENS
           [--batch-prompts BATCH_PROMPT_IDS_JSON] [--no-compile] [--runs N] [--partial FILE]
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch
from transformers import AutoModelForCausalLM

START = time.perf_counter()


def progress(message):
    print(f"[transformers {time.perf_counter() - START:7.1f} s] {message}", file=sys.stderr, flush=True)


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
    bandwidth = 2 * n * reps / (start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return bandwidth


def timed_generate(model, ids, new_tokens):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
    )
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def measure(model, ids, new_tokens, warmups, runs):
    """Warm-up generations of the full length (compiles, captures), then `runs` x (1 token, N tokens)."""
    batch, prompt_len = ids.shape
    t0 = time.perf_counter()
    for _ in range(warmups):
        timed_generate(model, ids, new_tokens)
    warmup_s = time.perf_counter() - t0
    results = []
    for _ in range(runs):
        one, _ = timed_generate(model, ids, 1)
        full, out = timed_generate(model, ids, new_tokens)
        generated = out.shape[1] - prompt_len
        if generated != new_tokens:
            raise RuntimeError(f"generated {generated} tokens, not {new_tokens}")
        results.append((one, full, out))
    by_step = sorted(results, key=lambda r: r[1] - r[0])
    one, full, out = by_step[len(by_step) // 2]  # the median run by decode time
    ms_per_step = (full - one) * 1e3 / (new_tokens - 1)
    return {
        "batch": batch,
        "promptTokens": prompt_len,
        "newTokens": new_tokens,
        "runs": runs,
        "warmupSeconds": warmup_s,
        "firstTokenMs": one * 1e3,
        "msPerStep": ms_per_step,
        "allRunsMsPerStep": [(f - o) * 1e3 / (new_tokens - 1) for o, f, _ in results],
        "decodeTokensPerSecond": batch * 1e3 / ms_per_step,
        "endToEndTokensPerSecond": batch * new_tokens / full,
        "outputIds": out[0, prompt_len:].tolist(),
    }


PARTIAL_FILE = None


def save_partial(result):
    if PARTIAL_FILE:
        tmp = f"{PARTIAL_FILE}.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, PARTIAL_FILE)


def phase(result, key, label, fn):
    progress(f"{label} ...")
    t0 = time.perf_counter()
    try:
        value = fn()
        if isinstance(value, dict) and "msPerStep" in value:
            progress(
                f"{label}: {value['msPerStep']:.3f} ms/step, {value['decodeTokensPerSecond']:.0f} tok/s of decode steps "
                f"(warm-up {value['warmupSeconds']:.1f} s; phase {time.perf_counter() - t0:.1f} s)"
            )
        result[key] = value
    except Exception as error:  # noqa: BLE001 - every phase reports its own failure and the run goes on
        traceback.print_exc()
        progress(f"{label} failed after {time.perf_counter() - t0:.1f} s: {error}")
        result[key] = {"error": f"{type(error).__name__}: {error}"}
    save_partial(result)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("prompt_file")
    parser.add_argument("new_tokens", type=int)
    parser.add_argument("--batch-prompts", help="JSON list of prompts (lists of ids, all of one length) for the large batch")
    parser.add_argument("--no-compile", action="store_true", help="leave out the static cache + torch.compile runs")
    parser.add_argument("--runs", type=int, default=3, help="measured runs of the compiled model (median); eager runs once")
    parser.add_argument("--partial", help="also write the JSON object so far to this file after every phase")
    args = parser.parse_args()
    global PARTIAL_FILE
    PARTIAL_FILE = args.partial

    with open(args.prompt_file) as f:
        prompt = json.load(f)
    batch_prompts = None
    if args.batch_prompts:
        with open(args.batch_prompts) as f:
            batch_prompts = json.load(f)
    import transformers

    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
    }
    result["copyBandwidthBytesPerSecond"] = copy_bandwidth()
    progress(f"copy bandwidth {result['copyBandwidthBytesPerSecond'] / 1e9:.0f} GB/s")
    save_partial(result)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16).to("cuda").eval()
    progress(f"model loaded ({result['device']}, transformers {result['transformers']}, torch {result['torch']})")
    ids = torch.tensor([prompt], device="cuda")
    batch_ids = torch.tensor(batch_prompts, device="cuda") if batch_prompts else None
    n = args.new_tokens

    # Eager: one warm-up of 8 tokens, one measured run (eager batch 1 takes seconds per run); in
    # inference_mode, as this baseline always ran.
    def eager(x):
        with torch.inference_mode():
            timed_generate(model, x, 8)
            return measure(model, x, n, warmups=0, runs=1)

    phase(result, "eager", f"eager, batch 1, {n} new tokens", lambda: eager(ids))
    if batch_ids is not None:
        phase(result, "eagerBatch", f"eager, batch {batch_ids.shape[0]}", lambda: eager(batch_ids))

    if not args.no_compile:
        # With a static cache, generate() compiles the decoding step itself (generation_config.compile_config:
        # inductor, fullgraph, "reduce-overhead", i.e. CUDA graphs) and marks each step for cudagraph trees.
        # Wrapping model.forward in torch.compile as well (the older recipe) made the second step read a
        # CUDA-graph output that the next replay had overwritten (measured 2026-11-30 with transformers 5.17).
        def setup_compile():
            model.generation_config.cache_implementation = "static"
            compile_config = getattr(model.generation_config, "compile_config", None)
            return {
                "cacheImplementation": "static",
                "forward": "compiled by generate() (generation_config.compile_config)",
                "generationCompileConfig": repr(compile_config) if compile_config is not None else None,
            }

        phase(result, "compileSetup", "static cache + torch.compile setup", setup_compile)
        if "error" in result["compileSetup"]:
            result["compiled"] = result["compiledBatch"] = {"error": "the compile setup failed: " + result["compileSetup"]["error"]}
        else:
            phase(result, "compiled", "static cache + torch.compile, batch 1", lambda: measure(model, ids, n, warmups=2, runs=args.runs))
            if batch_ids is not None:
                phase(
                    result,
                    "compiledBatch",
                    f"static cache + torch.compile, batch {batch_ids.shape[0]}",
                    lambda: measure(model, batch_ids, n, warmups=2, runs=args.runs),
                )
    # Only batch 1's row 0 tokens are compared with Kiln's; the large batches' ids are dropped.
    for key in ("eagerBatch", "compiledBatch"):
        if isinstance(result.get(key), dict):
            result[key].pop("outputIds", None)
    progress("done")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
