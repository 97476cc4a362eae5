"""Wall time of the default study (``weightspace study``: the paper's four methods and weightspace's
own, three generator seeds on data built once, methods in worker processes), against its budget of
15 minutes on 2 cores.

Prints each method's data time and per-seed fit / sample / audit times (a method's worker runs its
seeds one after another), the load average before and after (other work on the machine slows
every figure), the CPU seconds the study used (this process and its worker processes: on a
machine shared with other jobs the wall time says more about the other jobs; CPU seconds / 2 is
the wall time two free cores would need if both stayed busy), and the verdicts. The stages other
than the generator fits (data, samples, audits) are summed apart: half of their CPU seconds is the
least wall time two cores need however fast the fits are. The single-seed
study on digits of the project's first days took 6–7 minutes; its settings no longer exist in the
code, so the ratio reported is against the budget.

Usage: python benchmarks/study_time.py [--out DIR] [--methods a,b] [--seed S] [--seeds K]. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

from weightspace.registry import BUILTIN_METHODS
from weightspace.study import run_study

BUDGET_S = 15 * 60


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="keep the study here (default: a temporary directory)")
    p.add_argument("--methods", default=",".join(BUILTIN_METHODS))
    p.add_argument("--seed", type=int, default=0, help="the study's seed (data and the first of the fits)")
    p.add_argument("--seeds", type=int, default=None, help="generator seeds (default: the preset's, 3)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        load_before = os.getloadavg()
        start = time.perf_counter()
        run_study(out, methods_=args.methods.split(","), seed=args.seed, seeds=args.seeds, progress=False)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        cpu = sum(u.ru_utime + u.ru_stime for u in usage)
        res = json.loads((out / "results.json").read_text())["results"]
    methods = {}
    for name in args.methods.split(","):
        t = res[name]["timings_s"]
        methods[name] = {"data_s": round(t["data"], 1),
                         "per_seed_s": [{k: round(v, 1) for k, v in s.items()} for s in t["seeds"]],
                         "total_s": round(t["data"] + sum(sum(s.values()) for s in t["seeds"]), 1),
                         "pooled": {g: v["label"] for g, v in res[name]["pooled"].items()}}
        print(name, json.dumps(methods[name]), flush=True)
    fit_s = sum(s["fit"] for m in methods.values() for s in m["per_seed_s"])
    other_s = sum(m["total_s"] for m in methods.values()) - fit_s
    print(json.dumps({"wall_s": round(wall, 1), "budget_s": BUDGET_S, "ratio_to_budget": round(wall / BUDGET_S, 3),
                      "cpu_s": round(cpu, 1), "cpu_s_over_2_cores": round(cpu / 2, 1),
                      "ratio_to_budget_2_free_cores": round(cpu / 2 / BUDGET_S, 3), "fit_s": round(fit_s, 1), "other_stages_s": round(other_s, 1),
                      "other_stages_over_2_cores": round(other_s / 2, 1), "cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in load_after], "methods": methods}))


if __name__ == "__main__":
    main()
