"""How far transformers itself, run in bfloat16, lands from the float32 references of the hf-tiny fixtures.

For each fixture: loads the checkpoint with dtype=torch.bfloat16 (eager attention, cuda when present),
teacher-forces each reference prompt followed by its 16 greedy tokens, and reports the worst relative
row error ||out - ref|| / ||ref|| over the context rows (0..P-1) and over the rows that chose the
generated tokens (P-1..P+14), as test/cuda/fixtures.test.mjs measures Kiln's bfloat16 engines. This is
the yardstick for the 3e-2 bar: what a bfloat16 implementation faithful to the model gets.

Usage: python3 tools/reference/bf16_transformers_error.py fixtures/hf-tiny > bf16-transformers.md
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def worst(out, ref):
    return float(((out - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


def main():
    root = sys.argv[1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"transformers bfloat16 (eager attention) against the float32 references, {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}\n")
    print("| fixture | context rel. err (worst row) | generation rel. err (worst row) |")
    print("| --- | --- | --- |")
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.exists(os.path.join(folder, "reference.json")):
            continue
        reference = json.load(open(os.path.join(folder, "reference.json")))
        tensors = load_file(os.path.join(folder, "reference.safetensors"))
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager").to(device).eval()
        context, generation = 0.0, 0.0
        with torch.inference_mode():
            for prompt in reference["prompts"]:
                ids = prompt["input_ids"] + prompt["greedy"]
                logits = model(torch.tensor([ids], device=device)).logits[0].float().cpu()
                ref = tensors[prompt["logits_tensor"]].float()
                P = len(prompt["input_ids"])
                context = max(context, worst(logits[:P], ref[:P]))
                generation = max(generation, worst(logits[P - 1 : P - 1 + len(prompt["greedy"])], ref[P - 1 : P - 1 + len(prompt["greedy"])]))
        print(f"| {name} | {context:.2e} | {generation:.2e} |", flush=True)


if __name__ == "__main__":
    main()
