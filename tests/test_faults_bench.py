"""bench/faults.py on one method and one kill point (the full run is a benchmark, not a test).

pytest tests/test_faults_bench.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_kill_and_resume_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench import faults

    out = tmp_path / "faults.json"
    faults.main(["--methods", "grpo", "--points", "1", "--no_server", "--out", str(out)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("resume_exact=1/1 max_abs_diff=0 faults_survived=2/2 rows_lost=0"), last
    result = json.loads(out.read_text())
    (kill,) = result["kills"]
    assert kill["exact"] and kill["resume_rc"] == 0 and kill["method"] == "grpo"
    assert {f["fault"] for f in result["faults"]} == {"plugin_skip", "plugin_raise"}
