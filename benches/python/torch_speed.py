"""PyTorch twins of the Deep RC tch models, timed one training step at a time.

Run by benches/src/bin/train_speed.rs (the Rust side of the comparison) with
the benchmark venv's Python (benches/setup-bench-venv.sh); prints one JSON
object on stdout. Each twin is the Rust model op for op, with the same
parameters (the Rust side checks that the counts are equal):

  hydro    deeprc_models::hydro::HydroLstm: weights in Kratzert's layout
           (weight_ih [I, 4H], weight_hh [H, 4H], bias [4H], gates f, i, o, g),
           reordered into PyTorch's i, f, g, o with index_select on every
           forward, the fused torch.lstm (as nn.LSTM calls it), dropout on
           h_T, a [H, 1] head; MSE against y [B, 1].
  dlinear  deeprc_models::dlinear::DLinear through ChannelIndependent
           (identity scaling): [B, L, C] -> [B*C, L], replicate padding +
           avg_pool1d(25) trend, two nn.Linear; MSE.
  mlp      deeprc_models::mlp::Mlp through ChannelIndependent (standard
           scaling, as the accuracy runs use): Linear+ReLU layers and a
           linear output; MSE on the scaled series.

A step is what the Rust side times: zero the gradients in place (as
deeprc_bridge::train::Optimizer::zero_grad does), forward, loss, backward,
Adam step (torch.optim.Adam, lr 1e-3; on CPU it runs its per-tensor loop).
Each step is also split into its three phases (zero_grad + forward + loss,
backward, optimizer step), in "phases_ms".

Usage: python torch_speed.py --case hydro|dlinear|mlp --threads K
           --warmup N --steps M [case sizes, see --help]
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class HydroLstm(nn.Module):
    def __init__(self, a):
        super().__init__()
        n_in, h = a.dyn + a.static, a.hidden
        self.n_static, self.hidden, self.p = a.static, h, a.dropout
        self.weight_ih = nn.Parameter(torch.empty(n_in, 4 * h))
        nn.init.orthogonal_(self.weight_ih)
        self.weight_hh = nn.Parameter(torch.eye(h).repeat(1, 4))
        self.bias = nn.Parameter(
            torch.cat([torch.full([h], a.forget_bias), torch.zeros(3 * h)])
        )
        bound = 1.0 / math.sqrt(h)
        self.head_weight = nn.Parameter(torch.empty(h, 1).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        order = [blk * h + j for blk in (1, 0, 3, 2) for j in range(h)]
        self.register_buffer("gate_order", torch.tensor(order, dtype=torch.int64))

    def forward(self, x_dyn, x_static):
        b, t, _ = x_dyn.shape
        h = self.hidden
        if self.n_static > 0:
            stat = x_static.unsqueeze(1).expand(b, t, self.n_static)
            x = torch.cat([x_dyn, stat], 2)
        else:
            x = x_dyn
        w_ih = self.weight_ih.index_select(1, self.gate_order).transpose(0, 1).contiguous()
        w_hh = self.weight_hh.index_select(1, self.gate_order).transpose(0, 1).contiguous()
        b_ih = self.bias.index_select(0, self.gate_order)
        b_hh = torch.zeros(4 * h, dtype=self.bias.dtype)
        zeros = torch.zeros(1, b, h, dtype=x.dtype)
        _, h_n, _ = torch._VF.lstm(
            x, (zeros, zeros), [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, self.training, False, True
        )
        last = F.dropout(h_n.squeeze(0), self.p, self.training)
        return last.matmul(self.head_weight).add(self.head_bias)


class DLinear(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.kernel = 25
        self.linear_seasonal = nn.Linear(a.lookback, a.horizon)
        self.linear_trend = nn.Linear(a.lookback, a.horizon)

    def forward(self, x):
        k = self.kernel
        seq = x.unsqueeze(1)
        n = seq.shape[2]
        front, back = (k - 1) // 2, k - 1 - (k - 1) // 2
        parts = []
        if front > 0:
            parts.append(seq.narrow(2, 0, 1).repeat(1, 1, front))
        parts.append(seq)
        if back > 0:
            parts.append(seq.narrow(2, n - 1, 1).repeat(1, 1, back))
        padded = torch.cat(parts, 2)
        trend = F.avg_pool1d(padded, [k], [1], [0], False, True).squeeze(1)
        seasonal = x - trend
        return self.linear_seasonal(seasonal) + self.linear_trend(trend)


class Mlp(nn.Module):
    def __init__(self, a):
        super().__init__()
        widths = [a.lookback] + [a.width] * a.layers
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], a.horizon)

    def forward(self, x):
        h = x
        for layer in self.hidden:
            h = layer(h).relu()
        return self.out(h)


def channel_independent_loss(model, x, y, standard):
    """ChannelIndependent::loss: [B, L, C] -> [B*C, L], optional scaling."""
    b, l, c = x.shape
    flat = x.permute(0, 2, 1).reshape(b * c, l)
    target = y.permute(0, 2, 1).reshape(b * c, y.shape[1])
    if standard:
        mean = flat.mean(1, keepdim=True, dtype=flat.dtype).detach()
        std = (flat.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt().detach()
        flat = (flat - mean) / std
        target = (target - mean) / std
    return F.mse_loss(model(flat), target)


def cpu_seconds():
    return time.process_time()


def mapped(needle):
    """The file this process mapped whose name contains needle."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and needle in parts[5]:
                return parts[5]
    return ""


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", required=True, choices=["hydro", "dlinear", "mlp"])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=256)
    # hydro
    p.add_argument("--seq-len", type=int, default=270)
    p.add_argument("--dyn", type=int, default=5)
    p.add_argument("--static", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.4)
    p.add_argument("--forget-bias", type=float, default=5.0)
    # forecasters
    p.add_argument("--lookback", type=int, default=96)
    p.add_argument("--horizon", type=int, default=96)
    p.add_argument("--channels", type=int, default=7)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.case == "hydro":
        model = HydroLstm(a)
        xd = torch.randn(a.batch, a.seq_len, a.dyn)
        xs = torch.randn(a.batch, a.static)
        y = torch.randn(a.batch, 1)
        loss_fn = lambda: F.mse_loss(model(xd, xs), y)  # noqa: E731
    else:
        model = DLinear(a) if a.case == "dlinear" else Mlp(a)
        x = torch.randn(a.batch, a.lookback, a.channels)
        y = torch.randn(a.batch, a.horizon, a.channels)
        standard = a.case == "mlp"
        loss_fn = lambda: channel_independent_loss(model, x, y, standard)  # noqa: E731
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    params = sum(q.numel() for q in model.parameters())

    ms, phases = [], []
    cpu0 = wall0 = 0.0
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = loss_fn()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        ms.append((t3 - t0) * 1e3)
        phases.append([(t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3])
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    json.dump(
        {
            "side": "pytorch",
            "case": a.case,
            "params": params,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "ms": ms[a.warmup :],
            "phases_ms": phases[a.warmup :],
            "cpu_s": cpu,
            "wall_s": wall,
            "loss": loss.item(),
            "torch_version": torch.__version__,
            "torch_file": torch.__file__,
            "torch_lib_mapped": mapped("libtorch_cpu.so"),
            "python": sys.version.split()[0],
            "optimizer": f"torch.optim.Adam(lr={a.lr}) (per-tensor loop on CPU)",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
