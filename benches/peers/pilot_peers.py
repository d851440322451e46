#!/usr/bin/env python3
"""One task-runtime workload run by one peer tool, in this (fresh) process.

Called by `pilot_bench` (benches/src/bin/pilot_bench.rs) once per round and
peer, interleaved with deeprc-pilot's own runs, with the task counts
pilot_bench uses for its own:

    pilot_peers.py --tool ray --case null --tasks 20000

Starting the runtime (`ray.init`, the Dask `LocalCluster`, RADICAL-Pilot's
session and pilot, each followed by 4 warm-up tasks) is not timed; it is
reported as the startup time. The timed part runs from the first submission
to the last result: all N tasks are submitted without waiting, then all are
waited for. Every file the runtime writes (Ray's session directory, Dask's
worker space, RADICAL-Pilot's session, pilot sandbox, agent config and its
$HOME files) goes to one temporary directory under /tmp, removed at the end.

Prints one line:

    RESULT <tasks> <seconds> <startup seconds>

where <tasks> is the number of tasks that completed successfully (a run
with fewer than N is a failure: the process exits non-zero), <seconds> the
timed part and <startup seconds> the untimed start of the runtime.
Anything else goes to stderr.

Tools and cases:

- ray null:     `ray.init(num_cpus=2, include_dashboard=False)`, N remote
                calls of `@ray.remote def f(): return None`, `ray.get` of all.
- ray bin_true: the same, each remote task running
                `subprocess.run(["/bin/true"])`.
- dask null:    dask.distributed `LocalCluster(n_workers=2,
                threads_per_worker=1)`, `client.map` of a null function over
                N distinct arguments (pure=False), `client.gather`.
- radical bin_true: RADICAL-Pilot on `local.localhost`, a pilot of 2 cores,
                N executable tasks `/bin/true`, `wait_tasks` for all.
                Offline this needs the
                venv's `bin/` on PATH, `VIRTUAL_ENV` and
                `RADICAL_UTILS_NTPHOST=ntp.invalid` (pilot_bench sets them).
- radical null: RADICAL-Pilot function tasks through raptor (one master,
                one worker of 1 core on the same 2-core pilot), N calls of a
                null Python function.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def null():
    return None


def bin_true():
    subprocess.run(["/bin/true"], check=True)


def run_ray(case, n, base):
    import ray

    os.environ["HOME"] = base  # Ray writes ~/.ray/auth_token
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, _temp_dir=base)
    fn = ray.remote(null if case == "null" else bin_true)
    # Warm the two workers (not timed, part of the start).
    ray.get([fn.remote() for _ in range(4)])
    startup = time.perf_counter() - t0
    try:
        t = time.perf_counter()
        refs = [fn.remote() for _ in range(n)]
        out = ray.get(refs)
        elapsed = time.perf_counter() - t
        return len(out), elapsed, startup
    finally:
        ray.shutdown()


def null_arg(_i):
    return None


def run_dask(case, n, base):
    if case != "null":
        raise SystemExit(f"dask: no case {case}")
    import dask
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    dask.config.set({"distributed.worker.daemon": False,
                     "temporary-directory": base})
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40,
                           local_directory=base)
    client = Client(cluster)
    client.gather(client.map(null_arg, range(4), pure=False))
    startup = time.perf_counter() - t0
    try:
        t = time.perf_counter()
        futs = client.map(null_arg, range(n), pure=False)
        out = client.gather(futs)
        elapsed = time.perf_counter() - t
        return len(out), elapsed, startup
    finally:
        client.close()
        cluster.close()


def run_radical(case, n, base):
    os.environ.setdefault("RADICAL_UTILS_NTPHOST", "ntp.invalid")
    os.environ["RADICAL_BASE"] = base
    # psij (RP's pilot launcher) and radical.utils write under $HOME.
    os.environ["HOME"] = base
    # ... and its agent config and session directory under the temporary
    # directory.
    os.environ["TMPDIR"] = base
    tempfile.tempdir = base
    os.environ.setdefault("RADICAL_REPORT", "FALSE")
    os.environ.setdefault("RADICAL_LOG_LVL", "ERROR")
    os.environ.setdefault("RADICAL_PROFILE", "FALSE")
    cwd = os.getcwd()
    os.chdir(base)
    session = None
    try:
        import radical.pilot as rp

        t0 = time.perf_counter()
        session = rp.Session()
        pmgr = rp.PilotManager(session=session)
        tmgr = rp.TaskManager(session=session)
        pilot = pmgr.submit_pilots(rp.PilotDescription({
            "resource": "local.localhost",
            "cores": 2,
            "runtime": 60,
            "sandbox": os.path.join(base, "pilot"),
        }))
        tmgr.add_pilots(pilot)
        pilot.wait(state=[rp.PMGR_ACTIVE] + rp.FINAL, timeout=300)
        if pilot.state != rp.PMGR_ACTIVE:
            raise RuntimeError(f"pilot did not become active: {pilot.state}")
        if case == "bin_true":
            make = lambda _i: rp.TaskDescription({  # noqa: E731
                "executable": "/bin/true", "ranks": 1, "cores_per_rank": 1})
        elif case == "null":
            master = pilot.submit_raptors(rp.TaskDescription({
                "mode": rp.RAPTOR_MASTER}))[0]
            worker = master.submit_workers(rp.TaskDescription({
                "mode": rp.RAPTOR_WORKER, "ranks": 1}))[0]
            master.wait(state=[rp.AGENT_EXECUTING] + rp.FINAL, timeout=300)
            worker.wait(state=[rp.AGENT_EXECUTING] + rp.FINAL, timeout=300)
            if worker.state in rp.FINAL:
                raise RuntimeError(f"raptor worker ended: {worker.state}")
            uid = master.uid
            make = lambda _i: rp.TaskDescription({  # noqa: E731
                "mode": rp.TASK_FUNCTION, "raptor_id": uid,
                "function": rp.PythonTask(null, (), {})})
        else:
            raise SystemExit(f"radical: no case {case}")
        warm = tmgr.submit_tasks([make(i) for i in range(4)])
        tmgr.wait_tasks(uids=[t.uid for t in warm])
        startup = time.perf_counter() - t0
        t = time.perf_counter()
        tasks = tmgr.submit_tasks([make(i) for i in range(n)])
        tmgr.wait_tasks(uids=[t.uid for t in tasks])
        elapsed = time.perf_counter() - t
        done = sum(1 for t in tasks if t.state == rp.DONE)
        if done != n:
            bad = next(t for t in tasks if t.state != rp.DONE)
            print(f"radical: {n - done} of {n} tasks not DONE, e.g. {bad.uid} "
                  f"{bad.state}: {bad.stderr}", file=sys.stderr)
        return done, elapsed, startup
    finally:
        if session is not None:
            session.close(download=False)
        os.chdir(cwd)


TOOLS = {
    "ray": (run_ray, ("null", "bin_true")),
    "dask": (run_dask, ("null",)),
    "radical": (run_radical, ("null", "bin_true")),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tool", choices=sorted(TOOLS), required=True)
    p.add_argument("--case", choices=("null", "bin_true"), required=True)
    p.add_argument("--tasks", type=int, required=True)
    a = p.parse_args()
    run, cases = TOOLS[a.tool]
    if a.case not in cases:
        p.error(f"{a.tool} has no case {a.case} (cases: {', '.join(cases)})")
    # Every file the runtime writes (Ray's session directory, Dask's worker
    # space, RADICAL-Pilot's session and pilot sandbox) goes here.
    base = tempfile.mkdtemp(prefix=f"deeprc-pilot-peers-{a.tool}-", dir="/tmp")
    try:
        done, seconds, startup = run(a.case, a.tasks, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"RESULT {done} {seconds:.4f} {startup:.3f}", flush=True)
    return 0 if done == a.tasks else 1


if __name__ == "__main__":
    sys.exit(main())
