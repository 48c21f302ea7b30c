#!/usr/bin/env python3
"""Independent check of a `loco export-hf` directory (and optionally `loco eval` outputs).

Uses only json + struct + torch (no safetensors / transformers packages needed):
  1. reads model.safetensors with its own parser and checks the format strictly (header
     length, 8-byte alignment, dtypes, shape x dtype size == offsets span, back-to-back
     coverage of the data area, "__metadata__" with "format": "pt");
  2. checks every tensor name and shape against config.json (LlamaForCausalLM names);
  3. runs its own PyTorch implementation of Hugging Face's Llama forward pass (written from
     transformers' modeling_llama: RMSNorm in fp32, rotate-half RoPE, GQA by repeat_kv,
     causal softmax attention, SwiGLU MLP, tied or untied head);
  4. with --logits FILE (from `loco eval --logits`): compares its logits and mean loss on the
     same input_ids/labels with loco's;
  5. with --grads FILE (from `loco eval --grads`, same tokens): compares torch autograd's
     gradient of the mean loss with loco's for every parameter;
  6. when the transformers package is importable, also loads the directory with
     LlamaForCausalLM.from_pretrained and compares its logits to (3).

Usage: python3 scripts/hf_check.py HF_DIR [--logits logits.safetensors] [--grads grads.safetensors]
Exit status 0 when every check passes.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2), "F16": (torch.float16, 2),
          "F64": (torch.float64, 8), "I32": (torch.int32, 4), "I64": (torch.int64, 8)}


def read_safetensors(path):
    raw = open(path, "rb").read()
    assert len(raw) >= 8, f"{path}: too small"
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw), f"{path}: header length {n} runs past the file"
    assert (8 + n) % 8 == 0, f"{path}: data area not 8-byte aligned"
    header_bytes = raw[8:8 + n]
    header = json.loads(header_bytes.decode("utf-8"))
    assert header_bytes.rstrip(b" ").endswith(b"}"), f"{path}: header padding is not spaces"
    meta = header.pop("__metadata__", {})
    assert all(isinstance(v, str) for v in meta.values()), f"{path}: metadata values must be strings"
    data = raw[8 + n:]
    spans = []
    tensors = {}
    for name, info in header.items():
        assert set(info) == {"dtype", "shape", "data_offsets"}, f"{name}: keys {set(info)}"
        dtype, size = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        numel = math.prod(info["shape"])
        assert end - begin == numel * size, f"{name}: shape/dtype vs offsets"
        assert 0 <= begin <= end <= len(data), f"{name}: offsets outside data"
        spans.append((begin, end, name))
        buf = bytearray(data[begin:end])
        t = torch.frombuffer(buf, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        assert begin == pos, f"{name}: gap or overlap at {begin} (expected {pos})"
        pos = end
    assert pos == len(data), f"{path}: tensors cover {pos} of {len(data)} data bytes"
    return tensors, meta


def expected_shapes(c):
    C, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim") or C // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    s = {"model.embed_tokens.weight": [V, C], "model.norm.weight": [C]}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        s.update({p + "input_layernorm.weight": [C], p + "post_attention_layernorm.weight": [C],
                  p + "self_attn.q_proj.weight": [q, C], p + "self_attn.k_proj.weight": [kv, C],
                  p + "self_attn.v_proj.weight": [kv, C], p + "self_attn.o_proj.weight": [C, q],
                  p + "mlp.gate_proj.weight": [F, C], p + "mlp.up_proj.weight": [F, C],
                  p + "mlp.down_proj.weight": [C, F]})
    if not c.get("tie_word_embeddings", False):
        s["lm_head.weight"] = [V, C]
    return s


def rms_norm(x, w, eps):  # LlamaRMSNorm
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def llama_forward(W, c, ids):
    """HF LlamaForCausalLM logits for ids (B, T); W: name -> fp32 tensor."""
    B, T = ids.shape
    C, NH, NKV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or C // NH
    eps, theta = c["rms_norm_eps"], c.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf")).triu(1)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(B, T, NH, hd).transpose(1, 2)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(B, T, NKV, hd).transpose(1, 2)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(B, T, NKV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(NH // NKV, dim=1)  # repeat_kv
        v = v.repeat_interleave(NH // NKV, dim=1)
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + mask, dim=-1, dtype=torch.float32)
        o = (att @ v).transpose(1, 2).reshape(B, T, NH * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir")
    ap.add_argument("--logits")
    ap.add_argument("--grads")
    ap.add_argument("--tol", type=float, default=2e-4)
    a = ap.parse_args()
    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    cfg = json.load(open(os.path.join(a.hf_dir, "config.json")))
    check(cfg.get("architectures") == ["LlamaForCausalLM"] and cfg.get("model_type") == "llama",
          "config.json: LlamaForCausalLM / llama")
    tensors, meta = read_safetensors(os.path.join(a.hf_dir, "model.safetensors"))
    check(meta.get("format") == "pt", 'safetensors __metadata__ "format" == "pt"')
    exp = expected_shapes(cfg)
    check(set(tensors) == set(exp), f"tensor names match config.json ({len(exp)} tensors)")
    check(all(list(tensors[n].shape) == s for n, s in exp.items() if n in tensors),
          "every tensor's shape matches config.json")
    want = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg["torch_dtype"]]
    check(all(t.dtype == want for t in tensors.values()), f"every tensor is {cfg['torch_dtype']}")
    W = {n: t.to(torch.float32) for n, t in tensors.items()}

    if a.logits:
        lt, _ = read_safetensors(a.logits)
        ids, labels, theirs = lt["input_ids"].long(), lt["labels"].long(), lt["logits"]
        with torch.no_grad():
            mine = llama_forward(W, cfg, ids)
        diff = (mine - theirs).abs().max().item()
        scale = theirs.abs().max().item()
        check(diff <= a.tol * max(1.0, scale),
              f"logits {tuple(theirs.shape)}: max |torch - loco| = {diff:.3g} (max |logit| {scale:.3g})")
        loss_t = torch.nn.functional.cross_entropy(mine.reshape(-1, mine.shape[-1]), labels.reshape(-1)).item()
        loss_l = torch.nn.functional.cross_entropy(theirs.reshape(-1, theirs.shape[-1]), labels.reshape(-1)).item()
        check(abs(loss_t - loss_l) <= 1e-5 * max(1.0, abs(loss_l)),
              f"mean loss: torch {loss_t:.7f} vs loco {loss_l:.7f}")
        try:
            import transformers  # noqa: F401
            from transformers import LlamaForCausalLM
            model = LlamaForCausalLM.from_pretrained(a.hf_dir, torch_dtype=torch.float32).eval()
            with torch.no_grad():
                hf = model(ids).logits
            d = (hf - theirs).abs().max().item()
            check(d <= a.tol * max(1.0, scale), f"transformers LlamaForCausalLM logits: max diff {d:.3g}")
        except ImportError:
            print("skip  transformers is not installed: compared against our own torch Llama only")

        if a.grads:
            gt, _ = read_safetensors(a.grads)
            P = {n: t.clone().requires_grad_(True) for n, t in W.items()}
            out = llama_forward(P, cfg, ids)
            loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1))
            loss.backward()
            worst, worst_name = 0.0, ""
            for n, p in P.items():
                g = gt[n]
                rel = (p.grad - g).abs().max().item() / max(1e-6, p.grad.abs().max().item())
                if rel > worst:
                    worst, worst_name = rel, n
            check(set(gt) == set(P) and worst <= 1e-3,
                  f"gradients of {len(gt)} tensors: worst max-relative diff {worst:.3g} ({worst_name})")

    print(f"{len(failures)} failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
