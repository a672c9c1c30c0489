#!/usr/bin/python3
"""bench_torch.py - the same training step as bench_train.c, in PyTorch.

The model is tinytorch/nn/deepseek.c written with torch.nn, layer for layer:
  h = embed(ids) + pos_embed(0..T-1)               nn.Embedding: N(0, 1)
  per layer: h = norm1(h + attn(h)); h = norm2(h + moe(h))   (post-norm, LayerNorm eps 1e-5)
  logits = head(h); loss = cross_entropy + sum over layers of alpha * E * sum_i f_i P_i
  attn (seed MLA): q = q_proj(x), c = kv_a_proj(x) [rank r], k|v = kv_b_proj(c) (k first),
      per head softmax(causal(q k^T / sqrt(hd))) v, o_proj; every Linear with bias
  moe: router Linear without bias, softmax scores, top-k, weights renormalised to sum 1;
      sparse dispatch: the (token, slot) pairs sorted by expert, index_select the rows,
      expert = fc2(relu(fc1 x)) of width 4*hidden, times the weight, index_add back
  init: nn.Linear's default (U(+-1/sqrt(in)) for weight and bias), nn.Embedding N(0, 1),
      LayerNorm weight 1 bias 0 - the scheme deepseek.c copies from PyTorch.
  SGD lr 0.1, no momentum. Random tokens: a sequence of T+1 per row, inputs = [:-1],
  targets = [1:], a fresh batch every step from a fixed seed.

Same protocol and output format as bench_train.c (RESULT / LOSSES lines). Needs
torch (Debian: python3-torch, run with /usr/bin/python3).

usage: bench_torch.py CONFIG [THREADS] [--steps N] [--warmup N] [--budget S] [--peak GFLOPS]
"""
import argparse
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: vocab, dim, layers, heads, experts, top_k, rank, seq, batch, warmup, steps
CONFIGS = {
    "toy": (100, 64, 2, 4, 4, 2, 16, 32, 8, 5, 50),
    "small": (256, 256, 4, 8, 8, 2, 64, 128, 8, 2, 10),
    "medium": (256, 512, 6, 8, 16, 2, 128, 256, 8, 1, 5),
}


class MLA(nn.Module):
    def __init__(self, dim, n_heads, rank):
        super().__init__()
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_a_proj = nn.Linear(dim, rank)
        self.kv_b_proj = nn.Linear(rank, 2 * dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B, T, d = x.shape
        H, hd = self.n_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, hd).transpose(1, 2)
        kv = self.kv_b_proj(self.kv_a_proj(x))
        k, v = kv.split(d, dim=-1)
        k = k.view(B, T, H, hd).transpose(1, 2)
        v = v.view(B, T, H, hd).transpose(1, 2)
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        a = F.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, T, d)
        return self.o_proj(o)


class Expert(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class MoE(nn.Module):
    def __init__(self, dim, n_experts, top_k, hidden):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.gate = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(dim, hidden) for _ in range(n_experts))

    def forward(self, x, alpha):
        shape = x.shape
        E, K = self.n_experts, self.top_k
        xf = x.reshape(-1, shape[-1])
        N = xf.shape[0]
        scores = F.softmax(self.gate(xf), dim=-1)            # [N, E]
        topv, topi = scores.topk(K, dim=-1)                   # [N, K]
        w = (topv / topv.sum(dim=-1, keepdim=True)).reshape(-1)  # [N*K]
        flat = topi.reshape(-1)
        order = torch.sort(flat, stable=True).indices         # (token, slot) pairs by expert
        counts = torch.bincount(flat, minlength=E)
        out = torch.zeros_like(xf)
        start = 0
        for e, c in enumerate(counts.tolist()):
            if c == 0:
                continue
            slots = order[start:start + c]
            start += c
            tok = torch.div(slots, K, rounding_mode="floor")
            y = self.experts[e](xf.index_select(0, tok))
            out = out.index_add(0, tok, y * w.index_select(0, slots).unsqueeze(1))
        # balance loss alpha * E * sum_i f_i P_i, f_i = counts_i / (N K) (a constant)
        f = counts.to(scores.dtype) / (N * K)
        aux = alpha * E * (f * scores.mean(dim=0)).sum()
        return out.reshape(shape), aux


class Block(nn.Module):
    def __init__(self, dim, n_heads, rank, n_experts, top_k, hidden):
        super().__init__()
        self.attn = MLA(dim, n_heads, rank)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.moe = MoE(dim, n_experts, top_k, hidden)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)


class DSV3(nn.Module):
    def __init__(self, vocab, dim, layers, heads, experts, top_k, rank, max_seq, alpha):
        super().__init__()
        self.alpha = alpha
        self.embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Embedding(max_seq, dim)
        self.layers = nn.ModuleList(Block(dim, heads, rank, experts, top_k, 4 * dim)
                                    for _ in range(layers))
        self.head = nn.Linear(dim, vocab)
        mask = torch.triu(torch.ones(max_seq, max_seq, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, ids, targets):
        B, T = ids.shape
        h = self.embed(ids) + self.pos_embed(torch.arange(T))
        mask = self.mask[:T, :T]
        aux = None
        for b in self.layers:
            h = b.norm1(h + b.attn(h, mask))
            y, a = b.moe(h, self.alpha)
            h = b.norm2(h + y)
            aux = a if aux is None else aux + a
        logits = self.head(h)
        ce = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return ce + aux


def forward_flops(vocab, dim, layers, heads, experts, top_k, rank, seq, batch):
    """Matmul FLOPs of one forward, as bench_train.c counts them."""
    N, d, r, V, E, k, h, T = batch * seq, dim, rank, vocab, experts, top_k, 4 * dim, seq
    per_layer = (2 * N * d * d + 2 * N * d * r + 2 * N * r * 2 * d + 2 * N * T * d
                 + 2 * N * T * d + 2 * N * d * d + 2 * N * d * E
                 + 2 * (N * k) * d * h + 2 * (N * k) * h * d)
    return layers * per_layer + 2 * N * d * V


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("threads_pos", nargs="?", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--peak", type=float, default=0.0)
    args = ap.parse_args()
    threads = args.threads_pos if args.threads_pos is not None else args.threads
    vocab, dim, layers, heads, experts, top_k, rank, seq, batch, warmup, steps = CONFIGS[args.config]
    if args.steps is not None:
        steps = args.steps
    if args.warmup is not None:
        warmup = args.warmup

    torch.set_num_threads(threads)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    torch.manual_seed(1234)
    model = DSV3(vocab, dim, layers, heads, experts, top_k, rank, seq, 0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(42)

    ms, losses = [], []
    timed, timed_sec = 0, 0.0
    for s in range(warmup + steps):
        seqs = torch.randint(vocab, (batch, seq + 1), generator=gen)
        ids, targets = seqs[:, :-1].contiguous(), seqs[:, 1:].contiguous()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        loss.backward()
        opt.step()
        lv = loss.item()
        dt = time.perf_counter() - t0
        ms.append(1e3 * dt)
        losses.append(lv)
        if s >= warmup:
            timed += 1
            timed_sec += dt
            if timed >= 3 and timed_sec > args.budget:
                break

    t = sorted(ms[warmup:])
    n = len(t)
    med = t[n // 2] if n % 2 else 0.5 * (t[n // 2 - 1] + t[n // 2])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tokens = batch * seq
    step_flops = 3.0 * forward_flops(vocab, dim, layers, heads, experts, top_k, rank, seq, batch)
    gflops = step_flops / (med * 1e-3) * 1e-9
    pct = 100.0 * gflops / args.peak if args.peak > 0 else 0.0
    finite = all(math.isfinite(x) for x in losses)
    n_params = sum(p.numel() for p in model.parameters())

    print(f"pytorch {torch.__version__} {args.config}, {threads} thread{'s' if threads > 1 else ''}")
    print(f"  parameters {n_params}")
    print(f"  steps: {warmup} warm-up + {n} timed; ms/step median {med:.2f} "
          f"(min {t[0]:.2f}, max {t[-1]:.2f})")
    print(f"  tokens/s {tokens / (med * 1e-3):.0f}")
    line = f"  matmul FLOPs/step {step_flops * 1e-9:.3f} G; {gflops:.1f} GFLOP/s"
    if args.peak > 0:
        line += f" = {pct:.1f}% of the measured {args.peak:.1f} GFLOP/s peak"
    print(line)
    print(f"  peak RSS {rss:.1f} MB (of which {base_rss:.1f} MB after importing torch)")
    print(f"  loss: first {losses[0]:.6f}, last {losses[-1]:.6f} "
          f"({'finite' if finite else 'NOT FINITE'})")
    print(f"RESULT impl=torch config={args.config} threads={threads} warmup={warmup} steps={n} "
          f"ms={med:.4f} ms_min={t[0]:.4f} tok_s={tokens / (med * 1e-3):.1f} "
          f"gflop_step={step_flops * 1e-9:.4f} gflops={gflops:.2f} pct_peak={pct:.2f} "
          f"rss_mb={rss:.1f} loss={losses[-1]:.6f} finite={int(finite)}")
    print(f"LOSSES impl=torch config={args.config} threads={threads} "
          + " ".join("%.9g" % x for x in losses))
    sys.stdout.flush()
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
