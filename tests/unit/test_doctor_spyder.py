"""rk doctor's spyder-kernels range: the local Spyder's own requirement when Spyder is installed."""

from __future__ import annotations

import sys

from rk.commands.doctor import spyder_range


def test_the_range_comes_from_the_local_spyders_metadata(tmp_path, monkeypatch):
    # A Spyder distribution's metadata as pip installs it (Spyder 6.0's requirement).
    info = tmp_path / "spyder-6.0.7.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spyder\nVersion: 6.0.7\n"
                                   "Requires-Dist: qtconsole<5.7.0,>=5.6.1\n"
                                   "Requires-Dist: spyder-kernels<3.1.0,>=3.0.0\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    spec, whose = spyder_range()
    assert set(spec.split(",")) == {"<3.1.0", ">=3.0.0"}
    assert whose == "the local Spyder 6.0.7"


def test_without_spyder_the_range_is_the_one_rk_installs():
    spec, whose = spyder_range()
    assert spec == ">=3.1.0,<3.2.0" and "rk's default" in whose
