"""bench/'s report: each miss gets its floor, and a run's saved figures render again unchanged."""

import pytest

from bench import report
from bench.cases import Results, Row
from bench.harness import Sample, Series

pytestmark = pytest.mark.fast

FLOORS = {
    "python -c pass": 0.02, "in-process inventory parse (...)": 0.11, "ansible-playbook, empty play": 0.80,
    "ansible-runner (rk.runner), empty play": 1.10, "ansible-playbook, one raw task (warm master)": 0.90,
    "ansible-playbook, one module task (ping, warm master)": 1.35, "ssh true, cold": 0.28,
    "ipykernel start until its file exists": 0.48,
}


def series(label, *walls):
    return Series(label, [Sample(w, w / 2) for w in walls])


def results(p1_rk: float) -> Results:
    hand = series("hand recipe", 0.89, 0.90, 0.88)
    res = Results(floors={name: series(name, t) for name, t in FLOORS.items()})
    res.rows = [
        Row("P1", "`rk up`, no kernel running", "cold (no ssh master)", series("rk up", p1_rk), hand, 2.0),
        Row("P1", "against the naive playbook", "cold (no ssh master)", series("rk up", p1_rk),
            series("naive playbook", 2.81), None),
        Row("P3", "8 vs 1", "cold", series("rk up, 8 hosts", 9.4), series("rk up, 1 host", 3.2), 2.0),
        Row("P3", "by hand", "cold", series("hand recipe, 8 hosts at once", 3.7),
            series("hand recipe, 1 host", 0.94), 2.0),
    ]
    return res


def test_each_miss_is_shown_beside_its_floor_and_met_targets_are_not():
    text = report.render(results(3.09), {"command": "x", "date": "d", "commit": "c", "load_before": "0",
                                         "load_after": "0", "reps": 3, "p6": "v"})
    misses = text.split("## Each miss and its floor")[1]
    p1 = next(line for line in misses.splitlines() if line.startswith("| P1 "))
    # 1.10 + 0.09 + 0.28 + 0.10 + 0.55 + 0.48 = 2.60 s against a 0.89 s hand recipe.
    assert "| 3.47x | 2.92x |" in p1 and "+0.49 s" in p1 and "naive playbook, 2.81 s" in p1
    p3 = next(line for line in misses.splitlines() if line.startswith("| P3 "))
    assert "| 2.94x | 3.94x |" in p3

    met = report.render(results(1.5), {"command": "x", "date": "d", "commit": "c", "load_before": "0",
                                       "load_after": "0", "reps": 3, "p6": "v"})
    assert "| P1 | cold" not in met.split("## Each miss and its floor")[1]


def test_saved_figures_render_the_same_results(tmp_path):
    res = results(3.09)
    res.scaling = [{"n": 1, "up": series("up", 3.4), "status": series("status", 2.6), "hand": series("hand", 0.3)}]
    res.breakdown = [("start-up", 0.95)]
    meta = {"command": "x", "date": "d", "commit": "c", "load_before": "0", "load_after": "0", "reps": 3, "p6": "v"}
    report.save(tmp_path / "r.json", res, meta)
    again, meta_again = report.load(tmp_path / "r.json")
    assert report.render(again, meta_again) == report.render(res, meta)


def test_peer_rows_render_with_their_targets_and_a_note_on_how_they_were_measured(tmp_path):
    res = Results()
    sshpyk = series("sshpyk 1.25, new kernel + 1+1", 1.3, 1.2, 1.4)
    res.rows = [Row("P6n", "first executed cell, new kernel", "cold", series("rk up (new kernel) + 1+1", 3.6),
                    sshpyk, 2.0),
                Row("P6r", "first executed cell, kernel running", "cold",
                    series("rk up (kernel running) + 1+1", 0.9), sshpyk, 0.75)]
    meta = {"command": "x", "date": "d", "commit": "c", "load_before": "0", "load_after": "0", "reps": 3, "p6": "v"}
    text = report.render(res, meta)
    p6n = next(line for line in text.splitlines() if line.startswith("| P6n "))
    assert "sshpyk 1.25, new kernel + 1+1: 1.30 s (1.20-1.40)" in p6n
    assert "| 2.77x | <= 2.0x | **missed** |" in p6n
    p6r = next(line for line in text.splitlines() if line.startswith("| P6r "))
    assert "| 0.69x | <= 0.75x | met |" in p6r
    assert "P6n and P6r compare rk with a peer tool, sshpyk" in text
    # The shared peer series survives a save and a load.
    report.save(tmp_path / "r.json", res, meta)
    again, meta_again = report.load(tmp_path / "r.json")
    assert report.render(again, meta_again) == text
