#!/usr/bin/env python3
"""PyTorch reference for `loco bench`: the same Llama, shapes and batch, timed the same way.

A minimal Llama (Hugging Face LlamaForCausalLM semantics, as in loco): token embedding ->
L x [RMSNorm -> GQA attention with rotate-half RoPE -> residual; RMSNorm -> SwiGLU MLP ->
residual] -> RMSNorm -> untied LM head -> cross-entropy. fp32 on the CPU, AdamW.

One timed training step = zero grads, forward+backward over grad_accum micro-batches of
random tokens, global grad-norm clip, AdamW step; the same work `loco bench` times.

    /usr/bin/python3 scripts/torch_llama_bench.py --config configs/tiny.json \
        --set training.micro_batch=8 --steps 20 --warmup 3 --threads 2 --json out.json

The model shapes can come from a loco JSON config (--config, with loco-style --set
overrides of model.* / training.* keys) or from the explicit flags, which win.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Defaults are loco's (include/loco/config/config.hpp).
DEFAULTS = {
    "model": {"vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2,
              "d_ff": 384, "max_seq_len": 256, "rope_theta": 10000.0, "norm_eps": 1e-5,
              "tie_embeddings": False, "init_std": 0.02},
    "optimizer": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                  "grad_clip": 1.0},
    "training": {"micro_batch": 8, "grad_accum": 1, "seq_len": 128, "seed": 1234},
}


def load_config(path, overrides):
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        with open(path) as f:
            user = json.load(f)
        for section in cfg:
            cfg[section].update(user.get(section, {}))
    for o in overrides:
        key, _, text = o.partition("=")
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in cfg:
            continue  # keys the PyTorch side does not model (data.*, output.*, ...)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        cfg[parts[0]][parts[1]] = value
    return cfg


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * rstd * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(T, hd, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, hd/2)
    emb = torch.cat((angles, angles), dim=-1)  # (T, hd)
    return emb.cos().float(), emb.sin().float()


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv = c["n_heads"], c["n_kv_heads"]
        self.hd = c["d_model"] // self.nh
        d = c["d_model"]
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)  # (B,NH,T,hd)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.nh // self.nkv
        if group > 1:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
        scores = scores.masked_fill(mask, float("-inf"))
        att = F.softmax(scores, dim=-1) @ v  # (B,NH,T,hd)
        return self.o_proj(att.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.up_proj = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.down_proj = nn.Linear(c["d_ff"], c["d_model"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["d_model"], c["norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["d_model"], c["norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, c, T):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["d_model"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["d_model"], c["norm_eps"])
        self.lm_head = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        if c["tie_embeddings"]:
            self.lm_head.weight = self.embed_tokens.weight
        hd = c["d_model"] // c["n_heads"]
        cos, sin = rope_tables(T, hd, c["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1), persistent=False)
        for name, p in self.named_parameters():
            if not name.endswith("layernorm.weight") and name != "norm.weight":
                nn.init.normal_(p, std=c["init_std"])

    def forward(self, tokens, targets):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", help="loco JSON config (model.* and training.* are used)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="loco-style override, e.g. --set training.micro_batch=8")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--foreach", action="store_true",
                    help="AdamW(foreach=True) (multi-tensor; default: the CPU default, per tensor)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    cfg = load_config(args.config, args.set)
    mc, tc, oc = cfg["model"], cfg["training"], cfg["optimizer"]
    B, T, accum = tc["micro_batch"], tc["seq_len"], tc["grad_accum"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(tc["seed"])

    model = Llama(mc, T)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=oc["lr"], betas=(oc["beta1"], oc["beta2"]),
                            eps=oc["eps"], weight_decay=oc["weight_decay"],
                            foreach=True if args.foreach else None)
    gen = torch.Generator().manual_seed(tc["seed"])
    batches = [(torch.randint(0, mc["vocab_size"], (B, T), generator=gen),
                torch.randint(0, mc["vocab_size"], (B, T), generator=gen)) for _ in range(accum)]

    def step():
        opt.zero_grad(set_to_none=False)  # loco zeroes its gradient buffer every step too
        loss_sum = 0.0
        for inputs, targets in batches:
            loss = model(inputs, targets) / accum
            loss.backward()
            loss_sum += loss.item()
        if oc["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), oc["grad_clip"])
        else:
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        opt.step()
        return loss_sum

    for _ in range(args.warmup):
        step()
    times = []
    loss = 0.0
    cpu0 = time.process_time()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)

    cpu_per_step = (time.process_time() - cpu0) / args.steps
    tokens_per_step = B * T * accum
    median, mean = statistics.median(times), statistics.fmean(times)
    flops_per_token = 6 * n_params + 12 * mc["n_layers"] * mc["d_model"] * T
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {
        "impl": "torch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "adamw_foreach": bool(args.foreach),
        "model": {k: mc[k] for k in ("vocab_size", "d_model", "n_layers", "n_heads",
                                     "n_kv_heads", "d_ff")},
        "micro_batch": B, "seq_len": T, "grad_accum": accum,
        "parameters": n_params,
        "steps": args.steps, "warmup": args.warmup,
        "tokens_per_step": tokens_per_step,
        "step_seconds": times,
        "step_median_s": median, "step_mean_s": mean, "step_min_s": min(times),
        "tokens_per_s": tokens_per_step / median,
        "cpu_seconds_per_step": cpu_per_step,
        "flops_per_token": flops_per_token,
        "model_flops_per_s": flops_per_token * tokens_per_step / median,
        "peak_rss_mib": peak_rss_mib,
        "final_loss": loss,
        "host": platform.node(),
    }
    print(f"torch {torch.__version__} | {n_params} parameters | B={B} T={T} accum={accum} | "
          f"{args.threads} threads")
    print(f"  step median {median * 1e3:9.2f} ms   mean {mean * 1e3:9.2f} ms   "
          f"min {min(times) * 1e3:9.2f} ms")
    print(f"  tokens/s     {tokens_per_step / median:12.0f}")
    print(f"  CPU time     {cpu_per_step * 1e3:12.2f} ms per step (process, all threads)")
    print(f"  model FLOP/s {flops_per_token * tokens_per_step / median / 1e9:12.2f} G "
          f"(6N + 12·L·d·T = {flops_per_token} FLOP/token)")
    print(f"  peak RSS     {peak_rss_mib:12.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
