#!/usr/bin/env python3
"""PyTorch reference for loco's GPU benchmark: Hugging Face LlamaForCausalLM (sdpa attention),
bf16 autocast, fused AdamW, random tokens — the setup the GPU performance issue quotes.

Times full training steps (forward, backward, optimizer) with CUDA events after warm-up and
prints one JSON line per (model, mode): tokens/s, TFLOP/s with FLOPs/token = 6·N + 12·L·d·T,
MFU against 989 TFLOP/s (H100/H200 dense bf16), peak memory.

    python3 scripts/torch_gpu_bench.py --model 134m --modes eager,compile --steps 20
"""
import argparse
import json
import sys
import time

SHAPES = {
    # name: (d_model, layers, heads, kv_heads, ffn, vocab, batch, seq)
    "134m": (768, 12, 12, 12, 2048, 32000, 16, 1024),
    "1b": (2048, 16, 16, 16, 5632, 32000, 4, 2048),
}
PEAK_TFLOPS = 989.0


def bench(name, mode, steps, warmup):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d, L, H, KV, F, V, B, T = SHAPES[name]
    cfg = LlamaConfig(hidden_size=d, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=KV, intermediate_size=F, vocab_size=V,
                      max_position_embeddings=T, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    step_model = torch.compile(model) if mode == "compile" else model
    tokens = torch.randint(0, V, (B, T + 1), device="cuda")
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_model(input_ids=inputs).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, V), labels.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        loss = step()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    tok_s = B * T / (ms / 1e3)
    flops_per_token = 6 * n_params + 12 * L * d * T
    tflops = tok_s * flops_per_token / 1e12
    return {"impl": "torch-" + mode, "model": name, "batch": B, "seq": T, "params": n_params,
            "step_ms": ms, "tok_per_s": tok_s, "tflops": tflops, "mfu": tflops / PEAK_TFLOPS,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "warmup_s": warm_s, "final_loss": float(loss), "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="134m", help="comma list of: " + ", ".join(SHAPES))
    ap.add_argument("--modes", default="eager,compile", help="comma list of eager, compile")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    for name in args.model.split(","):
        for mode in args.modes.split(","):
            try:
                print(json.dumps(bench(name, mode, args.steps, args.warmup)), flush=True)
            except Exception as e:  # report and go on: one failure must not hide the rest
                print(json.dumps({"impl": "torch-" + mode, "model": name, "error": repr(e)}),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
