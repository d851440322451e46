#!/usr/bin/env python3
"""One frame operator run by one peer tool, in this (fresh) process.

Called by `frame_bench` (benches/src/bin/frame_bench.rs) once per round and
peer, interleaved with Deep RC's own runs, on the Parquet files frame_bench
wrote from the very rows its ranks generate:

    frame_peers.py --tool duckdb --case join --left L.parquet --right R.parquet --threads 2

Loading the Parquet files into the tool's memory is not timed; the timed
part is the operator with its result materialised in memory (an Arrow
table, a DuckDB table, a pandas or Polars frame, a persisted Dask frame), as Deep RC's
`DistTable` result is. Prints one line, the same format the Rust children
print: `RESULT <seconds,seconds,...> <peak RSS KiB> <output rows>` (one time
per `--reps`; frame_bench treats the first as a warm-up).

Tools: duckdb, polars, pandas (single-threaded by design), datafusion
(DataFusion's Python bindings), dask (dask.distributed LocalCluster, one
worker process per thread).
"""

import argparse
import os
import resource
import sys
import time

CASES = ("join", "sort", "groupby", "groupby4")
SUMS = {"groupby": ["v0"], "groupby4": ["v0", "v1", "v2", "v3"]}


def peak_rss_kib():
    """Peak RSS of this process and of its waited-for children (Dask's
    workers), in KiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own + kids


def sql(case):
    """The operator as SQL over tables `l` and `r` (DuckDB, DataFusion)."""
    if case == "join":
        return "SELECT * FROM l JOIN r ON l.key = r.key"
    if case == "sort":
        return "SELECT * FROM l ORDER BY key"
    sums = ", ".join(f"sum({c})" for c in SUMS[case])
    return f"SELECT key % 1000 AS g, {sums} FROM l GROUP BY g"


def setup_duckdb(case, left, right, threads):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    con.execute(f"CREATE TABLE l AS SELECT * FROM read_parquet('{left}')")
    con.execute(f"CREATE TABLE r AS SELECT * FROM read_parquet('{right}')")
    q = sql(case)

    # Materialised in DuckDB's own memory (its fastest way to hold a result;
    # converting it to Arrow would add a copy Deep RC does not make).
    def op():
        con.execute("DROP TABLE IF EXISTS out")
        t = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE out AS {q}")
        elapsed = time.perf_counter() - t
        return elapsed, con.execute("SELECT count(*) FROM out").fetchone()[0]

    return op, con.close


def setup_polars(case, left, right, threads):
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    import polars as pl

    l = pl.read_parquet(left)
    r = pl.read_parquet(right) if case == "join" else None

    def op():
        t = time.perf_counter()
        if case == "join":
            out = l.join(r, on="key", how="inner")
        elif case == "sort":
            out = l.sort("key")
        else:
            out = l.group_by((pl.col("key") % 1000).alias("g")).agg(
                [pl.col(c).sum() for c in SUMS[case]]
            )
        return time.perf_counter() - t, out.height

    return op, None


def setup_pandas(case, left, right, threads):
    import pandas as pd

    l = pd.read_parquet(left)
    r = pd.read_parquet(right) if case == "join" else None

    def op():
        t = time.perf_counter()
        if case == "join":
            out = l.merge(r, on="key", how="inner")
        elif case == "sort":
            out = l.sort_values("key", kind="stable")
        else:
            out = l.groupby(l["key"] % 1000)[SUMS[case]].sum()
        return time.perf_counter() - t, len(out)

    return op, None


def setup_datafusion(case, left, right, threads):
    import datafusion
    import pyarrow.parquet as pq

    cfg = datafusion.SessionConfig().with_target_partitions(threads)
    ctx = datafusion.SessionContext(cfg)
    # In memory, two partitions per table, as Deep RC's two ranks hold them.
    for name, path in (("l", left), ("r", right)):
        tab = pq.read_table(path)
        n = tab.num_rows
        parts = [tab.slice(n * p // threads, n * (p + 1) // threads - n * p // threads)
                 for p in range(threads)]
        ctx.register_record_batches(name, [p.to_batches() for p in parts])
    q = sql(case)

    def op():
        t = time.perf_counter()
        batches = ctx.sql(q).collect()
        return time.perf_counter() - t, sum(b.num_rows for b in batches)

    return op, None


DASK_RSS = [0]


def setup_dask(case, left, right, threads):
    import dask
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster, wait

    dask.config.set({"distributed.worker.daemon": False})
    cluster = LocalCluster(n_workers=threads, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    l = dd.read_parquet(left, split_row_groups=True).repartition(npartitions=2 * threads).persist()
    r = None
    if case == "join":
        r = dd.read_parquet(right, split_row_groups=True).repartition(
            npartitions=2 * threads).persist()
        wait(r)
    wait(l)

    def op():
        t = time.perf_counter()
        if case == "join":
            out = l.merge(r, on="key", how="inner", shuffle_method="tasks")
        elif case == "sort":
            out = l.sort_values("key")
        else:
            out = l.assign(g=l["key"] % 1000).groupby("g")[SUMS[case]].sum()
        out = out.persist()
        wait(out)
        elapsed = time.perf_counter() - t
        rows = int(out.shape[0].compute())
        # The workers' memory now (after the operator): the scheduler does
        # not keep a worker's peak.
        DASK_RSS[0] = sum(w["metrics"]["memory"]
                          for w in client.scheduler_info()["workers"].values()) // 1024
        del out
        return elapsed, rows

    def close():
        client.close()
        cluster.close()

    return op, close


TOOLS = {
    "duckdb": setup_duckdb,
    "polars": setup_polars,
    "pandas": setup_pandas,
    "datafusion": setup_datafusion,
    "dask": setup_dask,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", choices=sorted(TOOLS), required=True)
    p.add_argument("--case", choices=CASES, required=True)
    p.add_argument("--left", required=True)
    p.add_argument("--right", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=1,
                   help="runs of the operator; all are printed, the caller "
                        "treats the first as a warm-up when there are more")
    a = p.parse_args()
    op, close = TOOLS[a.tool](a.case, a.left, a.right, a.threads)
    times, rows = [], 0
    try:
        for _ in range(a.reps):
            seconds, rows = op()
            times.append(seconds)
    finally:
        if close is not None:
            close()
    rss = peak_rss_kib() + DASK_RSS[0]
    print(f"RESULT {','.join(f'{t:.4f}' for t in times)} {rss} {rows}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
