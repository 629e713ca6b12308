"""Where scribe-7m's int4 group-32 perplexity cost comes from, and what in-format methods recover
(issue 12, docs/decisions/0019). Analysis only: no build or test uses it.

A float64 numpy replay of scribe-7m (LLaMA: RMSNorm, GQA, RoPE, SwiGLU) with fake-quantized weights.
Float32 weights give 3.1270 over the Book of Ruth, as the float32 engine does; the default int4 build
(round-to-nearest with the writer's scale search, layer 0 and the LM head at int8) gives 3.7725 here
against the engine's 3.7641 (float32 activations) / 3.7687 (Q8_0 activations). Perplexity is measured
as packages/cli/test/quantization.test.ts does (windows of 256, each from <|endoftext|>), and greedy
agreement as its int4 test does (4 prompts x 32 tokens, teacher-forced).

  node tools/reference/int4_quality_tokens.mjs /tmp/study      # Ruth and prompt token ids (Kiln's tokenizer)
  python3 tools/reference/int4_quality_study.py /tmp/study calibrate   # 32 x 256 calibration tokens
  python3 tools/reference/int4_quality_study.py /tmp/study run rtn 0              # the default build
  python3 tools/reference/int4_quality_study.py /tmp/study run gptq 0             # GPTQ, layer 0 at int8
  python3 tools/reference/int4_quality_study.py /tmp/study run gptq 0 v_proj,down_proj   # + int8 classes

Calibration text is the model's own samples (no text but Ruth ships in the repository, and Ruth is the
evaluation text): 16 sequences from <|endoftext|> at temperature 1 and 16 from eight KJV-style prompts
at 0.8, 256 tokens each. Needs numpy only; a run takes 1-5 minutes on 2 cores.
"""
import json
import os
import struct
import sys

import numpy as np

MODEL = os.path.join(os.path.dirname(__file__), '../../packages/scribe-7m/model/')
CFG = json.load(open(MODEL + 'config.json'))
HD, NH, KV, L = CFG['head_dim'], CFG['num_attention_heads'], CFG['num_key_value_heads'], CFG['num_hidden_layers']
FLOAT32_PPL = 3.1269869857  # this replay, float32 weights
LINEARS = {'attn_in': ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'], 'o_in': ['self_attn.o_proj'],
           'mlp_in': ['mlp.gate_proj', 'mlp.up_proj'], 'down_in': ['mlp.down_proj']}


def load():
    raw = open(MODEL + 'model.safetensors', 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    weights = {}
    for name, t in header.items():
        if name == '__metadata__':
            continue
        s, e = t['data_offsets']
        bits = np.frombuffer(raw[8 + n + s:8 + n + e], dtype=np.uint16).astype(np.uint32) << 16
        weights[name] = bits.view(np.float32).reshape(t['shape']).astype(np.float64)
    return weights


def rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + CFG['rms_norm_eps']) * w


INV_FREQ = (1.0 / (10000.0 ** (np.arange(0, HD, 2, dtype=np.float32) / HD))).astype(np.float64)  # float32 (0004)


def rope(x, pos):
    f = np.outer(pos, INV_FREQ)
    c, s = np.cos(f)[:, None, :], np.sin(f)[:, None, :]
    x1, x2 = x[..., :HD // 2], x[..., HD // 2:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def forward(W, ids, hook=None, cache=None, start=0):
    """Logits [T, V] of ids (positions start..); hook(layer, input name, x) sees each linear's input."""
    x = W['model.embed_tokens.weight'][ids]
    T = len(ids)
    pos = np.arange(start, start + T)
    for l in range(L):
        p = f'model.layers.{l}.'
        h = rms(x, W[p + 'input_layernorm.weight'])
        if hook:
            hook(l, 'attn_in', h)
        q = rope((h @ W[p + 'self_attn.q_proj.weight'].T).reshape(T, NH, HD), pos)
        k = rope((h @ W[p + 'self_attn.k_proj.weight'].T).reshape(T, KV, HD), pos)
        v = (h @ W[p + 'self_attn.v_proj.weight'].T).reshape(T, KV, HD)
        if cache is not None:
            if l in cache:
                k, v = np.concatenate([cache[l][0], k]), np.concatenate([cache[l][1], v])
            cache[l] = (k, v)
        kk, vv = np.repeat(k, NH // KV, axis=1), np.repeat(v, NH // KV, axis=1)
        a = np.einsum('thd,shd->hts', q, kk) / np.sqrt(HD)
        a = np.where((np.arange(k.shape[0])[None, :] > pos[:, None])[None], -1e30, a)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum('hts,shd->thd', a, vv).reshape(T, NH * HD)
        if hook:
            hook(l, 'o_in', o)
        x = x + o @ W[p + 'self_attn.o_proj.weight'].T
        h = rms(x, W[p + 'post_attention_layernorm.weight'])
        if hook:
            hook(l, 'mlp_in', h)
        g, u = h @ W[p + 'mlp.gate_proj.weight'].T, h @ W[p + 'mlp.up_proj.weight'].T
        m = g / (1 + np.exp(-g)) * u
        if hook:
            hook(l, 'down_in', m)
        x = x + m @ W[p + 'mlp.down_proj.weight'].T
    return rms(x, W['model.norm.weight']) @ W['lm_head.weight'].T


def perplexity(W, ids, window=256):
    nll, count = 0.0, 0
    for s in range(0, len(ids), window):
        chunk = [0] + ids[s:s + window]
        lg = forward(W, np.array(chunk))
        lg = lg - lg.max(-1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        nll -= lp[np.arange(len(chunk) - 1), chunk[1:]].sum()
        count += len(chunk) - 1
    return float(np.exp(nll / count))


def agreement(W, Q, prompts, n=32):
    same = total = 0
    for p in prompts:
        out, cache = [], {}
        lg = forward(W, np.array(p), cache=cache)
        for j in range(n):
            out.append(int(lg[-1].argmax()))
            lg = forward(W, np.array([out[-1]]), cache=cache, start=len(p) + j)
        lq = forward(Q, np.array(p + out[:-1]))
        same += sum(int(lq[len(p) - 1 + j].argmax() == out[j]) for j in range(n))
        total += n
    return same, total


def bf16(x):
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def codes(w, s):
    with np.errstate(divide='ignore', invalid='ignore'):
        q = np.clip(np.round(w / np.where(s == 0, 1, s)), -8, 7)
    return np.where(s == 0, 0, q)


def group_scale(g):
    """The engine writer's int4GroupScale (engine_file.cpp) for rows of groups g [R, G]: scale [R, 1]."""
    m = g[np.arange(len(g)), np.abs(g).argmax(1)][:, None]
    best, best_err = bf16(m / -8.0), np.full((len(g), 1), np.inf)
    for step in range(11):
        with np.errstate(divide='ignore', invalid='ignore'):
            q = np.clip(np.round(g * (np.float32(-9 + 0.2 * step) / m)), -8, 7)
        wq, qq = (g * q).sum(1, keepdims=True), (q * q).sum(1, keepdims=True)
        s = bf16(np.where(qq > 0, wq / np.where(qq > 0, qq, 1), 0))
        e = ((codes(g, s) * s - g) ** 2).sum(1, keepdims=True)
        ok = (s != 0) & (e < best_err)
        best, best_err = np.where(ok, s, best), np.where(ok, e, best_err)
    return best


def rtn4(w, G=32):
    g = w.reshape(-1, G)
    return (codes(g, group_scale(g)) * group_scale(g)).reshape(w.shape)


def rtn8(w):
    s = np.abs(w).max(1, keepdims=True) / 127
    return np.round(w / np.where(s == 0, 1, s)) * s


def gptq4(w, H, G=32, damp=0.01, block=128):
    """GPTQ (Frantar et al. 2022) in the engine's format: symmetric int4, one bfloat16 scale per 32
    inputs, each group's scale chosen by group_scale on the error-updated weights when the column loop
    reaches the group; columns in order (no act-order, which would need permuted groups)."""
    W, H = w.copy(), H.copy()
    R, K = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[np.diag_indices(K)] += damp * np.mean(np.diag(H))
    Hi = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1, E1 = W[:, i1:i2].copy(), np.zeros((R, i2 - i1))
        for i in range(i2 - i1):
            if (i1 + i) % G == 0:
                s = group_scale(W1[:, i:i + G])
            q = codes(W1[:, i:i + 1], s) * s
            Q[:, i1 + i:i1 + i + 1] = q
            e = (W1[:, i:i + 1] - q) / Hi[i1 + i, i1 + i]
            W1[:, i:] -= e @ Hi[i1 + i:i1 + i + 1, i1:i2][:, i:]
            E1[:, i:i + 1] = e
        W[:, i2:] -= E1 @ Hi[i1:i2, i2:]
    return Q


def calibrate(W, prompts, rng):
    out = []
    for n in range(32):
        ids, temp = ([0], 1.0) if n < 16 else (list(prompts[n % len(prompts)]), 0.8)
        cache = {}
        lg = forward(W, np.array(ids), cache=cache)
        while len(ids) < 257:
            z = lg[-1] / temp
            p = np.exp(z - z.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
            lg = forward(W, np.array([ids[-1]]), cache=cache, start=len(ids) - 1)
        out.append(ids[1:])
    return out


def main():
    d, cmd = sys.argv[1], sys.argv[2]
    W = load()
    if cmd == 'calibrate':
        prompts = json.load(open(os.path.join(d, 'calibration-prompts.json')))
        json.dump(calibrate(W, prompts, np.random.default_rng(1)), open(os.path.join(d, 'calibration.json'), 'w'))
        return
    algo, int8_layers = sys.argv[3], [int(x) for x in sys.argv[4].split(',') if x]
    int8_classes = sys.argv[5].split(',') if len(sys.argv) > 5 else []
    calib = json.load(open(os.path.join(d, 'calibration.json'))) if algo == 'gptq' else []
    Q = dict(W)
    Q['lm_head.weight'] = rtn8(W['lm_head.weight'])
    n4 = n8 = 0
    for l in range(L):
        H = {}
        if algo == 'gptq' and l not in int8_layers:
            # Sequential: layer l's inputs come from the model with layers < l already quantized.
            def hook(layer, name, x):
                if layer == l:
                    H[name] = H.get(name, 0) + x.T @ x
            for s in calib:
                forward(Q, np.array([0] + s), hook=hook)
        for name, linears in LINEARS.items():
            for lin in linears:
                key = f'model.layers.{l}.{lin}.weight'
                if l in int8_layers or lin.split('.')[1] in int8_classes:
                    Q[key] = rtn8(W[key])
                    n8 += W[key].size
                else:
                    Q[key] = gptq4(W[key], H[name]) if algo == 'gptq' else rtn4(W[key])
                    n4 += W[key].size
    ppl = perplexity(Q, json.load(open(os.path.join(d, 'ruth.json'))))
    same, total = agreement(W, Q, json.load(open(os.path.join(d, 'prompts.json'))))
    print(f'{" ".join(sys.argv[3:])}: int8 share of layer linears {n8 / (n4 + n8):.2f}, perplexity {ppl:.4f} '
          f'({100 * (ppl / FLOAT32_PPL - 1):+.1f}%), greedy agreement {same}/{total}')


if __name__ == '__main__':
    main()
