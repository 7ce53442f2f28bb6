"""rk's benchmark (issue 7): python -m bench [--quick] [--reps N] [--cases P1,P3,...].

Starts its own podman SSH hosts (tests/hosts), runs each case's two sides alternately, writes
bench/RESULTS.md and removes the hosts. Needs root (rootful podman) and rk installed in the
Python that runs it. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import time
from pathlib import Path

from bench import cases, peers, report
from bench.harness import Bench

# Cases measured within another case's alternation: P2 within P1's, P6r within P6n's.
ALSO = {"P1": {"P2"}, "P6n": {"P6r"}}
ALL = ["floors", "P1", "P2", "P3", "P4", "P5", "P6", "P6n", "P6r", "P7", "P8", "scaling", "breakdown"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="3 runs per side, scaling to 8 hosts, one cold start")
    parser.add_argument("--reps", type=int, help="runs per side (default 5, --quick 3)")
    parser.add_argument("--cases", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--p6", choices=["own-tunnel", "rk-tunnel"], default="rk-tunnel",
                        help="P6: open the five ssh -L forwards for rk's file (own-tunnel), or use the "
                             "localhost connection file of rk's supervised tunnel as is (rk-tunnel)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (not the hosts)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: write --out again from a run's saved figures (RESULTS.json), "
                             "with the current NOTES.md")
    args = parser.parse_args(argv)
    if args.render:
        res, meta = report.load(args.render)
        meta["notes"] = meta.get("failures", []) + _notes()
        args.out.write_text(report.render(res, meta))
        return 0
    reps = args.reps or (3 if args.quick else 5)
    wanted = set(args.cases.split(","))
    unknown = wanted - set(ALL)
    if unknown:
        parser.error(f"unknown case {', '.join(sorted(unknown))}")
    counts = [1, 2, 4, 8] if args.quick else [1, 2, 4, 8, 16]
    # One host when no case needs more (P6n/P6r alone should not load a shared machine with 8).
    fleet = max(counts) if "scaling" in wanted else 8 if wanted & {"P3", "P4", "P8"} else 1

    # A kill (SIGTERM) still removes the hosts: it unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    load_before = _load()
    res = cases.Results()
    failures: list[str] = []
    bench = Bench(keep=args.keep)
    try:
        _say(f"work dir {bench.dir}; starting {fleet} python hosts and provisioning the shared venv")
        group = bench.python_hosts(fleet)
        hosts8 = group.hosts[:8]
        inv1 = bench.inventory(group, group.hosts[:1], "py-1.yml")
        inv8 = bench.inventory(group, hosts8, "py-8.yml")
        h1 = group.hosts[0]
        steps = [
            ("floors", lambda: cases.floors(bench, inv1, h1, reps, res)),
            ("breakdown", lambda: cases.breakdown(bench, inv1, h1, res)),
            ("P1", lambda: cases.p1_p2(bench, inv1, h1, reps, res)),
            ("P3", lambda: cases.p3(bench, inv1, inv8, hosts8, reps, res)),
            ("P4", lambda: cases.p4(bench, inv8, hosts8, reps, res)),
            ("P6", lambda: cases.p6(bench, inv1, h1, reps, args.p6, res)),
            ("P6n", lambda: peers.p6_peers(bench, inv1, h1, reps, res)),  # P6r too: one alternation
            ("P7", lambda: cases.p7(bench, reps, res)),
            ("P8", lambda: cases.p8(bench, inv8, hosts8, reps, res)),
            ("scaling", lambda: cases.scaling(bench, group, counts, reps, res)),
            ("P5", lambda: cases.p5(bench, 1 if args.quick else reps, res)),
        ]
        for name, step in steps:
            if name in wanted or wanted & ALSO.get(name, set()):
                _say(f"{name} ({time.monotonic() - started:.0f} s)")
                try:
                    step()
                except Exception as error:  # one broken case must not cost the others' figures
                    failures.append(f"- {name} failed: `{str(error).splitlines()[0][:300]}`")
                    _say(f"{name} failed: {error}")
    finally:
        bench.close()
    meta = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": report.commit(),
        "load_before": load_before,
        "load_after": _load(),
        "reps": reps,
        "p6": ("rk up, then the bench's own `ssh -L` for the five ports (rk has no tunnel yet)"
               if args.p6 == "own-tunnel" else "rk up with rk's supervised tunnel"),
        "failures": ["## Cases that failed", "", *failures, ""] if failures else [],
    }
    # Every sample, so the analysis can be rewritten and RESULTS.md rendered again (--render).
    report.save(args.out.with_suffix(".json"), res, meta)
    meta["notes"] = meta["failures"] + _notes()
    args.out.write_text(report.render(res, meta))
    _say(f"wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


def _notes() -> list[str]:
    notes = Path(__file__).parent / "NOTES.md"
    return ["", notes.read_text()] if notes.exists() else []


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
