#!/usr/bin/env python3
"""PyTorch's DataLoader on bridge_bench's workloads, in this (fresh) process.

Called by `bridge_bench` (benches/src/bin/bridge_bench.rs) once per round
and configuration, interleaved with the Data Bridge's own runs, on the rows
bridge_bench generated and wrote once under `target/bridge-bench-data/`:

    loader_peers.py --data DIR --workload windows --variant map \
        --order shuffled --workers 2 --batches 4000 --threads 2

Data (written by bridge_bench, read here before the clock starts):

    DIR/x.npy       float32 [rows, 9], C order, little-endian: f0..f7, label
    DIR/series.npy  int64 [rows]: the series id of each row (runs of equal ids)

Workloads (the same as bridge_bench's, batch 256 unless --batch-size):

    windows  96 input rows + 24 target rows over the 8 features (the targets
             are the same 8 features), z-scored per feature before the clock
             (the Data Bridge normalises at build time too), every start
             whose 120 rows lie in one series, stride 1. One batch is an
             inputs tensor [256, 96, 8] and a targets tensor [256, 24, 8]:
             3840 B per window.
    tabular  8 features + 1 label, as they are (no normalisation): inputs
             [256, 8], targets [256, 1]: 36 B per sample.

Variants:

    map      what the tutorial writes: a map-style Dataset whose
             `__getitem__(i)` returns one sample (windows: two slices of the
             feature tensor; tabular: `TensorDataset`), batched by
             DataLoader's `batch_size=256` and `default_collate` (stacking).
    batched  PyTorch at its best, what a competent user writes: a
             `BatchSampler` passed as the sampler with `batch_size=None`, so
             `__getitem__` gets a batch's 256 indices at once and builds the
             batch with one vectorised op per tensor (windows:
             `torch.index_select` over an `as_strided` view of all windows of
             the feature tensor, no copy until the batch; tabular:
             `TensorDataset`'s own list indexing).

Orders: shuffled (RandomSampler, generator seeded with --seed) or
sequential. --workers 0 builds batches in this process; --workers W > 0
uses W worker processes (fork, persistent_workers=True, prefetch_factor 2,
PyTorch's defaults otherwise; each worker runs torch with one thread, as
PyTorch sets it). --threads sets torch.set_num_threads in this process
(bridge_bench passes the threads its loader uses: max(1, workers)). No
pinned memory (no CUDA device is assumed; the Data Bridge pins only when
one is present).

Timing, as bridge_bench's `run()`: one warm-up batch (which starts the
workers) is taken and dropped; then the clock runs over --batches batches,
cycling epochs (each epoch a new order), touching each tensor (its data
pointer) and summing the tensor bytes produced
(`nelement() * element_size()` of inputs and targets). With
--max-seconds S > 0 the clock also stops after the first batch that ends
S seconds or more in (bridge_bench passes 10 s, so that the one-sample-per-
`__getitem__` variant does not take minutes); the figure is then the rate
over the batches done, which RESULT reports. Prints one line:

    RESULT <config> <batches> <seconds> <bytes>

where <config> is `<workload>-<variant>-<order>-w<workers>`, e.g.
`windows-batched-shuffled-w2`; GB/s is <bytes> / <seconds> / 1e9. Errors go
to stderr with a non-zero exit status, and no RESULT line.
"""

import argparse
import itertools
import os
import sys
import time

INPUT_LEN, HORIZON, FEATURES = 96, 24, 8


def load(data_dir):
    import numpy as np

    x = np.load(os.path.join(data_dir, "x.npy"))
    series = np.load(os.path.join(data_dir, "series.npy"))
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != FEATURES + 1:
        raise SystemExit(f"x.npy: want float32 [rows, {FEATURES + 1}], got {x.dtype} {x.shape}")
    if series.shape != (x.shape[0],):
        raise SystemExit(f"series.npy: want [{x.shape[0]}], got {series.shape}")
    return x, series


def window_starts(series):
    """Every start whose 120 rows lie in one run of equal series ids."""
    import numpy as np

    need = INPUT_LEN + HORIZON
    cuts = np.flatnonzero(np.diff(series)) + 1
    bounds = np.concatenate(([0], cuts, [len(series)]))
    starts = [
        np.arange(a, b - need + 1, dtype=np.int64)
        for a, b in zip(bounds[:-1], bounds[1:])
        if b - a >= need
    ]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def build(args):
    """The Dataset and the DataLoader keyword arguments of one config."""
    import numpy as np
    import torch
    from torch.utils.data import (
        BatchSampler,
        Dataset,
        RandomSampler,
        SequentialSampler,
        TensorDataset,
    )

    x, series = load(args.data)
    if args.workload == "windows":
        f = x[:, :FEATURES]
        f = ((f - f.mean(axis=0)) / f.std(axis=0)).astype(np.float32)
        feats = torch.from_numpy(np.ascontiguousarray(f))
        starts = torch.from_numpy(window_starts(series))
        if args.variant == "map":

            class Windows(Dataset):
                def __init__(self, x, starts):
                    # A numpy array, not a list: 10M Python ints would be
                    # copied into every forked worker as their refcounts move.
                    self.x, self.starts = x, starts.numpy()

                def __len__(self):
                    return len(self.starts)

                def __getitem__(self, i):
                    s = int(self.starts[i])
                    return (
                        self.x[s : s + INPUT_LEN],
                        self.x[s + INPUT_LEN : s + INPUT_LEN + HORIZON],
                    )

            ds = Windows(feats, starts)
        else:

            class WindowBatches(Dataset):
                def __init__(self, x, starts):
                    self.x, self.starts = x, starts
                    n = x.shape[0] - INPUT_LEN - HORIZON + 1
                    # Views of every window of the frame (no copy).
                    self.inputs = x.as_strided((n, INPUT_LEN, FEATURES), (FEATURES, FEATURES, 1))
                    self.targets = x[INPUT_LEN:].as_strided(
                        (n, HORIZON, FEATURES), (FEATURES, FEATURES, 1)
                    )

                def __len__(self):
                    return len(self.starts)

                def __getitem__(self, idx):
                    s = self.starts[torch.as_tensor(idx)]
                    return (
                        torch.index_select(self.inputs, 0, s),
                        torch.index_select(self.targets, 0, s),
                    )

            ds = WindowBatches(feats, starts)
    else:
        feats = torch.from_numpy(np.ascontiguousarray(x[:, :FEATURES]))
        labels = torch.from_numpy(np.ascontiguousarray(x[:, FEATURES:]))
        ds = TensorDataset(feats, labels)

    gen = torch.Generator()
    gen.manual_seed(args.seed)
    kw = dict(num_workers=args.workers)
    if args.workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=2)
    if args.variant == "map":
        kw.update(batch_size=args.batch_size, shuffle=args.order == "shuffled", generator=gen)
    else:
        inner = (
            RandomSampler(ds, generator=gen)
            if args.order == "shuffled"
            else SequentialSampler(ds)
        )
        kw.update(sampler=BatchSampler(inner, args.batch_size, drop_last=False), batch_size=None)
    return ds, kw


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--workload", choices=("windows", "tabular"), required=True)
    p.add_argument("--variant", choices=("map", "batched"), required=True)
    p.add_argument("--order", choices=("shuffled", "sequential"), required=True)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batches", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=0.0)
    args = p.parse_args()

    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(args.threads)
    ds, kw = build(args)
    loader = DataLoader(ds, **kw)
    config = f"{args.workload}-{args.variant}-{args.order}-w{args.workers}"
    print(
        f"loader_peers: torch {torch.__version__}, {config}, {len(ds)} samples, "
        f"{torch.get_num_threads()} thread(s)",
        file=sys.stderr,
    )

    # Warm-up: one batch (starts the persistent workers).
    next(iter(loader))
    t = time.perf_counter()
    batches = nbytes = sink = 0
    done = False
    for _epoch in itertools.count():
        for inputs, targets in loader:
            sink ^= inputs.data_ptr() ^ targets.data_ptr()
            nbytes += (
                inputs.nelement() * inputs.element_size()
                + targets.nelement() * targets.element_size()
            )
            batches += 1
            if batches == args.batches or (
                args.max_seconds > 0 and time.perf_counter() - t >= args.max_seconds
            ):
                done = True
                break
        if done:
            break
    secs = time.perf_counter() - t
    print(f"RESULT {config} {batches} {secs:.6f} {nbytes}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
