"""Recomputes the reference outputs of the bfloat16 fixtures the way transformers runs a bfloat16
checkpoint: from_pretrained(dtype=float32) upcasts the stored weights exactly and keeps the rotary
inverse frequencies in float32 (they are a non-persistent buffer computed at init).

The shared fixtures' references were made with `model.to(torch.bfloat16).float()`, which also rounds
that buffer to bfloat16 (nn.Module.to casts buffers; transformers#30709) — a precision loss no loader
applies. Run on the GPU machine:
  python3 tools/reference/regen_bf16_reference.py OUT fixtures/hf-tiny/llama_bf16 fixtures/hf-tiny/qwen2_bf16 packages/scribe-7m/model
"""
import json, os, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@torch.no_grad()
def greedy_reference(model, prompt_ids, new_tokens):
    # Same procedure as the fixtures' generator: full recompute, float32, teacher-forced logits after.
    ids = list(prompt_ids)
    margins = []
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids], device=model.device)).logits[0, -1].float()
        top2 = torch.topk(logits, 2)
        margins.append(float(top2.values[0] - top2.values[1]))
        ids.append(int(top2.indices[0]))
    full = model(torch.tensor([ids], device=model.device)).logits[0].float().cpu().contiguous()
    return ids[len(prompt_ids):], margins, full


def main(out, sources):
    for src in sources:
        name = os.path.basename(os.path.normpath(src))
        meta = json.load(open(os.path.join(src, "reference.json")))
        # How transformers loads the checkpoint by default (dtype="auto": bfloat16): which dtype does the
        # rotary buffer get?
        auto = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager")
        inv = [(n, b.dtype) for n, b in auto.named_buffers() if n.endswith("inv_freq")]
        print(name, "default from_pretrained: params", next(auto.parameters()).dtype, "inv_freq", inv[:1], flush=True)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager").cuda().eval()
        inv = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
        print(name, "inv_freq dtype:", inv[0].dtype if inv else None, flush=True)
        tensors = {}
        for i, p in enumerate(meta["prompts"]):
            gen, margins, full = greedy_reference(model, p["input_ids"], meta["new_tokens"])
            tensors[f"logits.{i}"] = full
            p.update(greedy=gen, greedy_margin_min=min(margins), logits_shape=list(full.shape))
        meta["reference"] = "transformers eager attention, float32, full recompute, from_pretrained(dtype=float32) of the bfloat16 checkpoint (float32 rotary frequencies)"
        os.makedirs(os.path.join(out, name), exist_ok=True)
        save_file(tensors, os.path.join(out, name, "reference.safetensors"))
        with open(os.path.join(out, name, "reference.json"), "w") as f:
            json.dump(meta, f, indent=1)

        # Evidence for the difference: the shared procedure (cast buffers to bf16) reproduces the old logits.
        old = model.to(torch.bfloat16).float()
        inv = [b for n, b in old.named_buffers() if n.endswith("inv_freq")]
        print(name, "after .to(bf16).float(): inv_freq dtype", inv[0].dtype if inv else None, flush=True)
        _, _, full_old = greedy_reference(old, meta["prompts"][0]["input_ids"], meta["new_tokens"])
        new0 = tensors["logits.0"]
        print(name, "relative difference between the two procedures, prompt 0:",
              float((full_old - new0).norm() / new0.norm()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
