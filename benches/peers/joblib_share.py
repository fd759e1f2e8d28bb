"""Peer of benches/share_write.rs's probe: joblib's loky backend with its automatic memmap.

The same data (a table of two float64 columns, a = i % 1000 and b = i, of 400 MB and 1 GiB),
the same job (2 workers, each sums one column), the same order of events (the workers are
started by a small job first, then the table is built and shared): time to the first result of
the first job that gets the table, and the driver's peak RSS over what it was before.

joblib dumps a large numpy argument to a file in its temp folder (memmapping) and the workers
map it. `--temp-folder` puts that file on the same file system as our share store (/tmp, a
disk); without it joblib picks /dev/shm when it can (memory).

Run with the venv made for it (python -m venv; pip install joblib numpy pyarrow):

    /work/target-sharewrite/venv/bin/python benches/peers/joblib_share.py [--temp-folder /tmp]

The table is built through pyarrow and its columns taken as numpy arrays without a copy, so
both sides share what an Arrow user holds.
"""

import argparse
import os
import resource
import sys
import time

import numpy as np
import pyarrow as pa
from joblib import Parallel, delayed


def column_sum(cols, i):
    return float(cols[i].sum())


def table(nbytes):
    rows = nbytes // 16
    idx = np.arange(rows, dtype=np.float64)
    t = pa.table({"a": np.fmod(idx, 1000.0), "b": idx})
    del idx
    # Zero-copy views of the Arrow columns (one chunk each, no nulls).
    return [t.column(i).chunk(0).to_numpy(zero_copy_only=True) for i in range(2)], t


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def probe(nbytes, temp_folder):
    kw = {"n_jobs": 2, "backend": "loky", "return_as": "generator"}
    if temp_folder:
        kw["temp_folder"] = temp_folder
    # Start the workers first (the executor is reused by the next call).
    list(Parallel(**kw)(delayed(column_sum)([np.zeros(4), np.zeros(4)], i) for i in range(2)))
    cols, keep = table(nbytes)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_kib("VmRSS:")
    t0 = time.perf_counter()
    results = Parallel(**kw)(delayed(column_sum)(cols, i) for i in range(2))
    first = next(results)
    ttfr = time.perf_counter() - t0
    second = next(results)
    peak = status_kib("VmHWM:")
    del keep
    return ttfr, base, peak, (first, second)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--temp-folder", default=None)
    p.add_argument("--sizes", default="400000000,1073741824")
    p.add_argument("--child", type=int, default=None)
    a = p.parse_args()
    if a.child is not None:
        ttfr, base, peak, _ = probe(a.child, a.temp_folder)
        print(f"probe bytes={a.child} first_result_ms={ttfr * 1e3:.1f} over_base_kib={peak - base}")
        return
    import subprocess

    where = a.temp_folder or "joblib's default (/dev/shm when it fits)"
    for nbytes in [int(s) for s in a.sizes.split(",")]:
        # A fresh interpreter per size, so the peak is this job's.
        args = [sys.executable, __file__, "--child", str(nbytes)]
        if a.temp_folder:
            args += ["--temp-folder", a.temp_folder]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("probe "))
        kv = dict(x.split("=") for x in line.split()[1:])
        label = f"{nbytes >> 30}GiB" if nbytes % (1 << 30) == 0 else f"{nbytes // 1_000_000}MB"
        print(
            f"joblib loky memmap {label} ({where}): first result {float(kv['first_result_ms']):.0f} ms; "
            f"driver peak RSS {int(kv['over_base_kib']) / 1024:.1f} MiB over the table"
        )


if __name__ == "__main__":
    main()
