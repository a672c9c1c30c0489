#!/usr/bin/python3
"""deepseek_v3_ref.py - a PyTorch (fp32) reference of DeepSeek-V3, written from
shared/deepseek_v3.md (sections 1-8), and the generator of the fixtures that
tests/test_v3.c compares tinyTorch-C against.

    /usr/bin/python3 tests/ref/deepseek_v3_ref.py          # writes tests/data/v3_*.safetensors

Each fixture file holds
    the weights under the official parameter names (section 2),
    input.ids   I32 [B, S]          token ids
    target.ids  I32 [B, S]          next-token targets
    ref.logits  F32 [B, S, V]       logits of every position
    ref.loss    F32 [1]             CE (mean over B*S) + alpha * balance loss (section 8)
    ref.ce      F32 [1]             the CE part alone (main head)
    grad.<name> F32                 d ref.loss / d <name> for every trainable parameter
and "__metadata__" {"config": <ModelArgs JSON>, "alpha": "<alpha>", "seed": ...}.
With Multi-Token Prediction (fixture c: "n_mtp_modules": 1, metadata "lambda") also
    ref.mtp_logits F32 [B, S-1, V]  the MTP module's logits (position i predicts t_{i+2})
    ref.mtp_ce     F32 [1]          its mean CE against target.ids[:, 1:]
and ref.loss = CE + lambda * mtp_ce + alpha * balance losses (main MoE layers and the MTP
block's MoE, the latter over its S-1 positions per sequence).

Multi-Token Prediction, D = 1 (shared/deepseek_v3.md section 8), in the layout of the
released checkpoint (layer 61 of the HF files) under reference-style names:
    mtp.0.enorm.weight [d]   mtp.0.hnorm.weight [d]   mtp.0.eh_proj.weight [d, 2d]
    mtp.0.attn_norm.weight, mtp.0.attn.*, mtp.0.ffn_norm.weight, mtp.0.ffn.*  (one block)
    mtp.0.norm.weight [d]    (shared_head.norm); embed.weight and head.weight are shared
    h'_i = eh_proj([enorm(embed[t_{i+1}]) ; hnorm(h_i)])   i = 0..S-2
h_i is the last main block's output (before the final norm). The concatenation puts the
embedding FIRST, as the released weights / inference engines do (eq. 21 writes the
reverse order). The block is MoE unless every main layer is dense (the same kind as the
last main layer). Its RoPE positions are 0..S-2.

Conventions follow the official inference/model.py: Linear(in, out) stores W [out, in]
and computes x W^T (no biases); RMSNorm eps 1e-6; interleaved RoPE; the gate's bias only
chooses experts. The complementary sequence-wise balance loss is computed per sequence
and per MoE layer, averaged over the sequences of the batch and summed over layers.
Needs only torch (1.13) and numpy; the safetensors writer is the small one below.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float32)

EPS = 1e-6

# ModelArgs defaults (section 1) - every key a config file may set.
DEFAULTS = dict(
    max_batch_size=8, max_seq_len=16384, dtype="bf16", scale_fmt=None,
    vocab_size=102400, dim=2048, inter_dim=10944, moe_inter_dim=1408,
    n_layers=27, n_dense_layers=1, n_heads=16,
    n_routed_experts=64, n_shared_experts=2, n_activated_experts=6,
    n_expert_groups=1, n_limited_groups=1, score_func="softmax", route_scale=1.0,
    q_lora_rank=0, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
    v_head_dim=128, original_seq_len=4096, rope_theta=10000.0, rope_factor=40,
    beta_fast=32, beta_slow=1, mscale=1.0,
)


class Args:
    def __init__(self, **kw):
        for k in kw:
            if k not in DEFAULTS and k not in ("gate_bias", "n_mtp_modules"):
                raise KeyError(f"unknown ModelArgs field '{k}'")
        d = dict(DEFAULTS)
        d.update(kw)
        self.__dict__.update(d)
        # the official Gate has a bias only if dim == 7168; the fixtures say it explicitly
        if "gate_bias" not in kw:
            self.gate_bias = self.dim == 7168
        # not a ModelArgs field: Multi-Token Prediction modules (0 or 1; V3 trains with 1)
        self.n_mtp_modules = kw.get("n_mtp_modules", 0)

    def to_json(self):
        d = {k: getattr(self, k) for k in DEFAULTS}
        d["gate_bias"] = self.gate_bias
        if self.n_mtp_modules:
            d["n_mtp_modules"] = self.n_mtp_modules
        return json.dumps(d)


# ---- section 4: RoPE tables and the interleaved rotation -------------------------------
def rope_tables(a):
    dr, base = a.qk_rope_head_dim, a.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dr, 2, dtype=torch.float32) / dr))
    if a.max_seq_len > a.original_seq_len:
        def corr(r):
            return dr * math.log(a.original_seq_len / (r * 2 * math.pi)) / (2 * math.log(base))
        lo = max(math.floor(corr(a.beta_fast)), 0)
        hi = min(math.ceil(corr(a.beta_slow)), dr - 1)
        if lo == hi:
            hi += 0.001
        ramp = torch.clamp((torch.arange(dr // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
        freqs = freqs / a.rope_factor * ramp + freqs * (1 - ramp)
    t = torch.arange(a.max_seq_len, dtype=torch.float32)
    ang = torch.outer(t, freqs)
    return torch.cos(ang), torch.sin(ang)          # [max_seq_len, dr/2] each


def rope(x, cos, sin):
    """x [B, S, ..., dr]; position of x[b, s] is s. Pairs (2k, 2k+1) rotate by angle."""
    B, S = x.shape[0], x.shape[1]
    shape = [1, S] + [1] * (x.dim() - 3) + [x.shape[-1] // 2]
    c, s = cos[:S].reshape(shape), sin[:S].reshape(shape)
    xe, xo = x[..., 0::2], x[..., 1::2]
    ye = xe * c - xo * s
    yo = xe * s + xo * c
    return torch.stack([ye, yo], dim=-1).flatten(-2)


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def linear(x, w):
    return x @ w.t()


# ---- the parameters (section 2) ----------------------------------------------------------
def block_shapes(a, p, dense):
    """One Transformer block under prefix p ("layers.L." or "mtp.0.")."""
    H, dn, dr, dv = a.n_heads, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
    d, E = a.dim, a.n_routed_experts
    out = []
    if a.q_lora_rank == 0:
        out.append((p + "attn.wq.weight", [H * (dn + dr), d]))
    else:
        out += [(p + "attn.wq_a.weight", [a.q_lora_rank, d]),
                (p + "attn.q_norm.weight", [a.q_lora_rank]),
                (p + "attn.wq_b.weight", [H * (dn + dr), a.q_lora_rank])]
    out += [(p + "attn.wkv_a.weight", [a.kv_lora_rank + dr, d]),
            (p + "attn.kv_norm.weight", [a.kv_lora_rank]),
            (p + "attn.wkv_b.weight", [H * (dn + dv), a.kv_lora_rank]),
            (p + "attn.wo.weight", [d, H * dv])]
    if dense:
        out += [(p + "ffn.w1.weight", [a.inter_dim, d]),
                (p + "ffn.w2.weight", [d, a.inter_dim]),
                (p + "ffn.w3.weight", [a.inter_dim, d])]
    else:
        out.append((p + "ffn.gate.weight", [E, d]))
        if a.gate_bias:
            out.append((p + "ffn.gate.bias", [E]))
        mi = a.moe_inter_dim
        for e in range(E):
            q = p + f"ffn.experts.{e}."
            out += [(q + "w1.weight", [mi, d]), (q + "w2.weight", [d, mi]),
                    (q + "w3.weight", [mi, d])]
        si = a.n_shared_experts * mi
        out += [(p + "ffn.shared_experts.w1.weight", [si, d]),
                (p + "ffn.shared_experts.w2.weight", [d, si]),
                (p + "ffn.shared_experts.w3.weight", [si, d])]
    out += [(p + "attn_norm.weight", [d]), (p + "ffn_norm.weight", [d])]
    return out


def mtp_dense(a):
    """The MTP block is the same kind as the last main layer (V3: MoE)."""
    return a.n_dense_layers >= a.n_layers


def param_shapes(a):
    d = a.dim
    out = [("embed.weight", [a.vocab_size, d])]
    for L in range(a.n_layers):
        out += block_shapes(a, f"layers.{L}.", L < a.n_dense_layers)
    out += [("norm.weight", [d]), ("head.weight", [a.vocab_size, d])]
    for k in range(a.n_mtp_modules):
        p = f"mtp.{k}."
        out += [(p + "enorm.weight", [d]), (p + "hnorm.weight", [d]),
                (p + "eh_proj.weight", [d, 2 * d])]
        out += block_shapes(a, p, mtp_dense(a))
        out.append((p + "norm.weight", [d]))
    return out


def init_params(a, gen, std, bias_std):
    """Matrices N(0, std^2); RMSNorm weights 1 + N(0, 0.1^2) (so that their gradients
    are not all alike); the gate bias N(0, bias_std^2)."""
    P = {}
    for name, shape in param_shapes(a):
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith("gate.bias"):
            t = bias_std * torch.randn(shape, generator=gen)
        else:
            t = std * torch.randn(shape, generator=gen)
        P[name] = t.float()
    return P


# ---- section 5: MLA -----------------------------------------------------------------------
def softmax_scale(a):
    scale = (a.qk_nope_head_dim + a.qk_rope_head_dim) ** -0.5
    if a.max_seq_len > a.original_seq_len:
        m = 0.1 * a.mscale * math.log(a.rope_factor) + 1.0
        scale = scale * m * m
    return scale


def mla(a, P, p, x, cos, sin):
    B, S, _ = x.shape
    H, dn, dr, dv = a.n_heads, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
    if a.q_lora_rank == 0:
        q = linear(x, P[p + "wq.weight"])
    else:
        q = linear(rmsnorm(linear(x, P[p + "wq_a.weight"]), P[p + "q_norm.weight"]),
                   P[p + "wq_b.weight"])
    q = q.view(B, S, H, dn + dr)
    q_nope, q_pe = q[..., :dn], rope(q[..., dn:], cos, sin)
    kv = linear(x, P[p + "wkv_a.weight"])
    c, k_pe = kv[..., :a.kv_lora_rank], rope(kv[..., a.kv_lora_rank:], cos, sin)  # [B,S,dr]
    kvb = linear(rmsnorm(c, P[p + "kv_norm.weight"]), P[p + "wkv_b.weight"]).view(B, S, H, dn + dv)
    k_nope, v = kvb[..., :dn], kvb[..., dn:]
    qh = torch.cat([q_nope, q_pe], -1)                                     # [B,S,H,D]
    kh = torch.cat([k_nope, k_pe.unsqueeze(2).expand(B, S, H, dr)], -1)    # [B,S,H,D]
    scores = torch.einsum("bshd,bthd->bsht", qh, kh) * softmax_scale(a)
    mask = torch.full((S, S), float("-inf")).triu_(1)
    scores = scores + mask.unsqueeze(1)
    att = scores.softmax(dim=-1)
    o = torch.einsum("bsht,bthd->bshd", att, v)
    return linear(o.flatten(2), P[p + "wo.weight"])


# ---- sections 6, 7: SwiGLU, gate, MoE -----------------------------------------------------
def mlp(P, p, x):
    return linear(F.silu(linear(x, P[p + "w1.weight"])) * linear(x, P[p + "w3.weight"]),
                  P[p + "w2.weight"])


def gate(a, P, p, u, margins):
    """u [N, d] -> weights [N, K], indices [N, K], scores [N, E] (original)."""
    z = linear(u, P[p + "weight"])
    s = z.softmax(-1) if a.score_func == "softmax" else z.sigmoid()
    bias = P.get(p + "bias")
    sel = s.detach() + (bias if bias is not None else 0.0)
    N, E, G, M, K = u.shape[0], a.n_routed_experts, a.n_expert_groups, a.n_limited_groups, \
        a.n_activated_experts
    if G > 1:
        sg = sel.view(N, G, E // G)
        gs = sg.amax(-1) if bias is None else sg.topk(2, dim=-1)[0].sum(-1)
        if M < G:
            v = gs.sort(-1, descending=True)[0]
            margins.append((v[:, M - 1] - v[:, M]).min().item())
        keep = gs.topk(M, dim=-1)[1]
        drop = torch.ones(N, G, dtype=torch.bool).scatter_(1, keep, False)
        sel = sg.masked_fill(drop.unsqueeze(-1), float("-inf")).flatten(1)
    v = sel.sort(-1, descending=True)[0]
    if K < E:
        gap = v[:, K - 1] - v[:, K]
        margins.append(gap[torch.isfinite(gap)].min().item() if torch.isfinite(gap).any()
                       else float("inf"))
    idx = sel.topk(K, dim=-1)[1]
    w = s.gather(1, idx)
    if a.score_func == "sigmoid":
        w = w / w.sum(-1, keepdim=True)
    return w * a.route_scale, idx, s


def moe(a, P, p, x, margins, bal):
    B, S, d = x.shape
    u = x.reshape(-1, d)
    w, idx, s = gate(a, P, p + "gate.", u, margins)
    y = torch.zeros_like(u)
    for e in range(a.n_routed_experts):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        y = y.index_add(0, tok, mlp(P, p + f"experts.{e}.", u[tok]) * w[tok, slot, None])
    y = y + mlp(P, p + "shared_experts.", u)
    # section 8: complementary sequence-wise balance loss (per sequence, mean over B)
    E, K = a.n_routed_experts, a.n_activated_experts
    counts = torch.zeros(B, E)
    counts.scatter_add_(1, idx.view(B, S * K), torch.ones(B, S * K))
    f = counts * E / (K * S)                                   # constant
    sn = s / s.sum(-1, keepdim=True)
    Pi = sn.view(B, S, E).mean(1)
    bal.append((f * Pi).sum(-1).mean())
    margins.append(float("inf") if counts.sum(0).min() > 0 else -1.0)  # every expert used
    return y.view(B, S, d)


# ---- section 3: the model -----------------------------------------------------------------
def block(a, P, p, h, dense, cos, sin, margins, bal):
    h = h + mla(a, P, p + "attn.", rmsnorm(h, P[p + "attn_norm.weight"]), cos, sin)
    x = rmsnorm(h, P[p + "ffn_norm.weight"])
    if dense:
        return h + mlp(P, p + "ffn.", x)
    return h + moe(a, P, p + "ffn.", x, margins, bal)


def forward(a, P, ids, mtp=False):
    """ids [B, S] -> logits [B, S, V], MTP logits [B, S-1, V] (None unless mtp), routing
    margins, balance-loss terms per MoE layer (the MTP block's last)."""
    cos, sin = rope_tables(a)
    h = P["embed.weight"][ids]
    margins, bal = [], []
    for L in range(a.n_layers):
        h = block(a, P, f"layers.{L}.", h, L < a.n_dense_layers, cos, sin, margins, bal)
    logits = linear(rmsnorm(h, P["norm.weight"]), P["head.weight"])
    mtp_logits = None
    if mtp:
        # section 8, D = 1: position i (0..S-2) combines h_i with the embedding of t_{i+1}
        p = "mtp.0."
        e = rmsnorm(P["embed.weight"][ids[:, 1:]], P[p + "enorm.weight"])
        hh = rmsnorm(h[:, :-1], P[p + "hnorm.weight"])
        x = linear(torch.cat([e, hh], -1), P[p + "eh_proj.weight"])   # embedding FIRST
        x = block(a, P, p, x, mtp_dense(a), cos, sin, margins, bal)
        mtp_logits = linear(rmsnorm(x, P[p + "norm.weight"]), P["head.weight"])
    return logits, mtp_logits, margins, bal


# ---- safetensors writer -------------------------------------------------------------------
def save_safetensors(path, tensors, meta):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        arr = np.ascontiguousarray(t)
        if arr.dtype == np.float32:
            dt = "F32"
        elif arr.dtype == np.int32:
            dt = "I32"
        else:
            raise TypeError(f"{name}: dtype {arr.dtype}")
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fp:
        fp.write(struct.pack("<Q", len(h)))
        fp.write(h)
        for b in blobs:
            fp.write(b)


# ---- fixtures -----------------------------------------------------------------------------
CONFIGS = {
    # (a) sigmoid scores, gate bias, 2 groups of 4 experts with 1 kept, query compression
    "a": dict(args=dict(vocab_size=32, dim=24, inter_dim=40, moe_inter_dim=12, n_layers=3,
                        n_dense_layers=1, n_heads=2, n_routed_experts=8, n_shared_experts=1,
                        n_activated_experts=2, n_expert_groups=2, n_limited_groups=1,
                        score_func="sigmoid", route_scale=2.5, q_lora_rank=12,
                        kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                        max_seq_len=16, original_seq_len=4096, gate_bias=True),
              B=2, S=8, std=0.3, bias_std=0.1, alpha=0.01),
    # (b) softmax scores, no query compression, route_scale != 1, YaRN on (max_seq_len >
    #     original_seq_len), 3 groups of 2 experts with 2 kept (max-score groups, no bias)
    "b": dict(args=dict(vocab_size=32, dim=16, inter_dim=32, moe_inter_dim=8, n_layers=2,
                        n_dense_layers=1, n_heads=2, n_routed_experts=6, n_shared_experts=1,
                        n_activated_experts=2, n_expert_groups=3, n_limited_groups=2,
                        score_func="softmax", route_scale=2.0, q_lora_rank=0,
                        kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                        max_seq_len=64, original_seq_len=16, rope_theta=10000.0,
                        rope_factor=40, beta_fast=32, beta_slow=1, mscale=0.707),
              B=2, S=6, std=0.3, bias_std=0.0, alpha=0.01),
}
# (c) = (a) + one Multi-Token Prediction module (MoE block), lambda 0.3, S = 10 so that the
#     MTP block's 2 x 9 tokens reach every expert
CONFIGS["c"] = dict(CONFIGS["a"], args=dict(CONFIGS["a"]["args"], n_mtp_modules=1), S=10,
                    lam=0.3)


def make_fixture(tag, spec, out_dir, min_margin=1e-3):
    """Reseed until every top-k and top-group choice wins by >= min_margin (routing is
    discontinuous; C's scores differ from these by ~1e-6) and every expert of every MoE
    layer receives a token (so that every parameter has a gradient)."""
    a = Args(**spec["args"])
    B, S = spec["B"], spec["S"]
    lam = spec.get("lam", 0.0)
    mtp = lam != 0.0
    for seed in range(1000):
        gen = torch.Generator().manual_seed(1234 + seed)
        P = init_params(a, gen, spec["std"], spec["bias_std"])
        ids = torch.randint(0, a.vocab_size, (B, S), generator=gen)
        tgt = torch.randint(0, a.vocab_size, (B, S), generator=gen)
        with torch.no_grad():
            _, _, margins, _ = forward(a, P, ids, mtp)
        if min(margins) >= min_margin:
            break
    else:
        raise RuntimeError(f"fixture {tag}: no seed without routing near-ties and idle experts")
    for name, t in P.items():
        t.requires_grad_(not name.endswith("gate.bias"))
    logits, mtp_logits, margins, bal = forward(a, P, ids, mtp)
    ce = F.cross_entropy(logits.reshape(-1, a.vocab_size), tgt.reshape(-1))
    loss = ce
    if mtp:
        # L_MTP = lambda * mean CE of position i (0..S-2) predicting t_{i+2} = tgt[:, i+1]
        mtp_ce = F.cross_entropy(mtp_logits.reshape(-1, a.vocab_size), tgt[:, 1:].reshape(-1))
        loss = loss + lam * mtp_ce
    loss = loss + spec["alpha"] * sum(bal)
    loss.backward()

    T = {n: t.detach().numpy().astype(np.float32) for n, t in P.items()}
    T["input.ids"] = ids.numpy().astype(np.int32)
    T["target.ids"] = tgt.numpy().astype(np.int32)
    T["ref.logits"] = logits.detach().numpy().astype(np.float32)
    T["ref.loss"] = np.array([loss.item()], dtype=np.float32)
    T["ref.ce"] = np.array([ce.item()], dtype=np.float32)
    if mtp:
        T["ref.mtp_logits"] = mtp_logits.detach().numpy().astype(np.float32)
        T["ref.mtp_ce"] = np.array([mtp_ce.item()], dtype=np.float32)
    for n, t in P.items():
        if t.requires_grad:
            T["grad." + n] = t.grad.numpy().astype(np.float32)
    meta = {"config": a.to_json(), "alpha": repr(spec["alpha"]), "seed": str(1234 + seed),
            "min_routing_margin": "%.3g" % min(margins)}
    if mtp:
        meta["lambda"] = repr(lam)
    path = os.path.join(out_dir, f"v3_{tag}.safetensors")
    save_safetensors(path, T, meta)
    print(f"{path}: seed {1234 + seed}, loss {loss.item():.6f} (ce {ce.item():.6f}), "
          f"min routing margin {min(margins):.3g}, {os.path.getsize(path)} bytes")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = os.path.join(here, "..", "data")
    os.makedirs(out_dir, exist_ok=True)
    tags = sys.argv[1:] or sorted(CONFIGS)
    for tag in tags:
        make_fixture(tag, CONFIGS[tag], out_dir)


if __name__ == "__main__":
    main()
