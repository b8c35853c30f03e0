"""bench/report.py: the results README rendered from a template and small handmade result files."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
NOW = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)


def load_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = load_report()


def sim_run(mode: str, **figures: Any) -> dict[str, Any]:
    """One mode's object as rumor.sim.report.write_json writes it (the keys the bounds table reads, and some)."""
    run: dict[str, Any] = {
        "scenario": "sim-tiny",
        "peers": 101,
        "orgs": 1,
        "blocks": 10,
        "block_size": 100000,
        "mode": mode,
        "seed": 7,
        "receivers": 100,
        "time_to_all_p50_s": 1.0,
        "time_to_all_p99_s": 2.0,
        "time_to_all_max_s": 2.5,
        "advertised_per_block": 0.0,
        "pulled_per_block": 4.0,
        "transferred_per_block": 1.0,
        "amplification": 2.5,
        "bounds": {"telephone_rounds": 7, "store_and_forward_s": 0.25, "push_only_rounds": 10.0, "hop_s": 0.05},
        "machine": "3 cores, Test CPU",
        "commit": "abc123",
    }
    run.update(figures)
    return run


def write_sim(results: Path) -> None:
    runs = [
        sim_run("fabric"),
        sim_run("enhanced", advertised_per_block=80.0, pulled_per_block=0.0, transferred_per_block=0.0,
                time_to_all_p50_s=0.5, time_to_all_p99_s=0.75, amplification=1.25),
    ]  # fmt: skip
    keys = ("scenario", "peers", "orgs", "blocks", "block_size", "seed", "machine", "commit")
    data = {**{k: runs[0][k] for k in keys}, "mode": "both", "runs": runs, "wall_s": 3.0}
    (results / "sim-tiny.json").write_text(json.dumps(data))


def render(results: Path, template: str) -> Any:
    return report.render(template, results, shown="res", now=NOW)


def rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_include_present_and_missing(tmp_path: Path) -> None:
    table = "*machine: 3 cores, Test CPU; commit abc123; sim-tiny, seed 7*\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    (tmp_path / "here.md").write_text(table)
    out = render(tmp_path, "# title\n\n{{include here.md}}\n\n{{ include gone.md }}\n")
    assert "# title\n\n*machine: 3 cores, Test CPU; commit abc123; sim-tiny, seed 7*\n\n| a | b |" in out.text
    assert "| 1 | 2 |\n\n*not measured in this run: res/gone.md is missing (run make bench)*" in out.text
    assert out.used == {"here.md": tmp_path / "here.md", "gone.md": None}
    assert "Rendered 2030-01-02 03:04 UTC" in out.text
    assert "| `gone.md` | missing |" in out.text
    assert rows(out.text, "`here.md`")[0][1].startswith(f"{datetime.now(UTC):%Y-%m-%d}")
    assert out.warnings == []


def test_include_text_is_fenced(tmp_path: Path) -> None:
    (tmp_path / "profile-peer.txt").write_text("\nmachine: 3 cores\n  42.0 %  Ledger.commit_many\n```\n\n")
    out = render(tmp_path, "a\n\n{{include_text profile-peer.txt}}\n\nb\n")
    # the file's own ``` makes the fence longer, so the block cannot end early
    assert "a\n\n````text\nmachine: 3 cores\n  42.0 %  Ledger.commit_many\n```\n````\n\nb" in out.text
    assert out.used == {"profile-peer.txt": tmp_path / "profile-peer.txt"}
    assert out.warnings == []
    (tmp_path / "plain.txt").write_text("one line\n")
    assert "```text\none line\n```" in render(tmp_path, "{{include_text plain.txt}}").text
    missing = render(tmp_path, "{{include_text gone.txt}}")
    assert "*not measured in this run: res/gone.txt is missing (run make bench)*" in missing.text
    assert "```" not in missing.text
    assert missing.used == {"gone.txt": None}
    refused = render(tmp_path, "{{include_text ../secret.txt}}\n{{include_text}}\n")
    assert "`{{include_text ../secret.txt}}` not rendered: expected a file name inside" in refused.text
    assert "`{{include_text}}` not rendered: expected one file name" in refused.text
    assert len(refused.warnings) == 2


def test_include_outside_the_results_is_refused(tmp_path: Path) -> None:
    out = render(tmp_path, "{{include ../secret.md}}\n{{nonsense}}\n")
    assert "not rendered: expected a file name inside the results directory" in out.text
    assert "`{{nonsense}}` not rendered: unknown" in out.text
    assert len(out.warnings) == 2


def test_comm_table_without_and_with_commit(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "figure": 9,
        "machine": "3 cores, Test CPU; Python 3.11.7, Linux",
        "rounds": 3,
        "medians": [
            {"envelope_bytes": 1045, "transport": "grpc+tls", "messages": 20000, "msgs_per_s": 8691,
             "mb_per_s": 9.08, "vs_raw_tcp": 0.129},
            {"envelope_bytes": 1045, "transport": "raw tcp", "messages": 20000, "msgs_per_s": 67169,
             "mb_per_s": 70.19, "vs_raw_tcp": 1.0},
        ],
        "decode_us": {"1045": 2.02},
    }  # fmt: skip
    (tmp_path / "comm.json").write_text(json.dumps(data))
    (tmp_path / "comm.md").write_text("the same table, as bench/comm.py writes it\n")
    out = render(tmp_path, "{{comm_table}}")
    assert out.warnings == []  # comm.md needs no {{include}} beside {{comm_table}}
    text = out.text
    assert "*machine: 3 cores, Test CPU; Python 3.11.7, Linux; commit: not recorded;" in text
    assert "median of 3 interleaved rounds*" in text
    assert rows(text, "1045") == [
        ["1045", "grpc+tls", "20000", "8691", "9.08", "0.13x"],
        ["1045", "raw tcp", "20000", "67169", "70.19", "1.00x"],
    ]
    assert "1045 bytes 2.0 µs" in text
    (tmp_path / "comm.json").write_text(json.dumps({**data, "commit": "abc123+dirty"}))
    assert "; commit: abc123+dirty;" in render(tmp_path, "{{comm_table}}").text
    (tmp_path / "comm.json").unlink()
    missing = render(tmp_path, "{{comm_table}}").text
    assert "*not measured in this run: res/comm.json is missing (run make bench)*" in missing


def test_bounds_table_rows(tmp_path: Path) -> None:
    write_sim(tmp_path)
    text = render(tmp_path, "{{bounds_table sim-tiny.json sim-huge.json}}").text
    assert "inputs: sim-tiny.json (machine: 3 cores, Test CPU; commit abc123; seed 7)*" in text
    telephone = rows(text, "telephone model")
    assert [r[1:3] for r in telephone] == [["sim-tiny", "fabric"], ["sim-tiny", "enhanced"]]
    assert telephone[0][3] == "≥ 0.250 s (7 rounds × 50.0 ms)"
    assert telephone[0][4] == "time to all p50 1.000 s, p99 2.000 s"
    assert telephone[0][5] == "p50 4.00, p99 8.00"
    assert telephone[1][5] == "p50 2.00, p99 3.00"
    push = rows(text, "push-only random gossip")
    assert push[0][3] == "10.00 rounds × 50.0 ms = 0.500 s"
    assert push[0][5] == "p50 2.00, p99 4.00"
    unreached = rows(text, "infect-and-die")
    assert unreached[0][3] == "~6 % (5.95 % for large N)"
    assert unreached[0][4].startswith("5.00 % by pull or state transfer (4.00 + 1.00 of 100 per block)")
    assert unreached[0][5] == "0.84"  # 5 % / 5.95 %
    assert unreached[1][4].startswith("advertisement share 80.00 % (80.00 of 100 per block)")
    assert unreached[1][5].startswith("13.44")
    amplification = rows(text, "payload amplification")
    assert [r[2:] for r in amplification] == [
        ["fabric", "≥ 1.0", "2.50", "2.50"],
        ["enhanced", "≥ 1.0", "1.25", "1.25"],
    ]
    assert "- res/sim-huge.json is missing: its rows are left out" in text


def test_bounds_table_loopback_rows(tmp_path: Path) -> None:
    common = {"scenario": "loopback", "peers": 8, "orgs": 2, "seed": None, "pulled_per_block": 0.0,
              "transferred_per_block": 1.0, "commit": "def456", "machine": "3 cores, Test CPU"}  # fmt: skip
    runs = [
        {**common, "block_size": 10000, "mode": "enhanced", "amplification": 3.0},
        {**common, "block_size": 10000, "mode": "fabric", "amplification": 3.5, "leaders": ["a", "b"]},
        {**common, "block_size": 1000000, "mode": "fabric", "amplification": 2.0},
    ]
    (tmp_path / "loopback.json").write_text(json.dumps({"runs": runs}))
    text = render(tmp_path, "{{bounds_table loopback.json}}").text
    assert rows(text, "telephone model") == []
    assert [r[1:] for r in rows(text, "payload amplification")] == [
        ["loopback N=8, 10KB", "fabric", "≥ 1.0", "3.50", "3.50"],
        ["loopback N=8, 10KB", "enhanced", "≥ 1.0", "3.00", "3.00"],
        ["loopback N=8, 1MB", "fabric", "≥ 1.0", "2.00", "2.00"],
    ]
    unreached = rows(text, "infect-and-die")
    assert [r[1:3] for r in unreached] == [["loopback N=8, 10KB", "fabric"]]
    assert unreached[0][4].startswith("16.67 % by pull or state transfer (0.00 + 1.00 of 6 per block)")
    assert "- res/loopback.json: no link model" in text
    assert "record neither `receivers` nor `leaders`" in text


def test_bounds_table_without_inputs(tmp_path: Path) -> None:
    text = render(tmp_path, "{{bounds_table}}").text
    assert "*not measured in this run: none of res/sim-100.json, res/sim-1000.json, res/loopback.json" in text
    assert "- res/sim-1000.json is missing: its rows are left out" in text


def test_profile_excerpt(tmp_path: Path) -> None:
    assert "profile-sim.txt is missing (run `python bench/profile_sim.py --out" in render(tmp_path, "{{profile}}").text
    (tmp_path / "profile-sim.txt").write_text("".join(f"line {i}\n" for i in range(1, 51)))
    text = render(tmp_path, "{{profile}}").text
    assert "```text\nline 1\n" in text
    assert "line 40\n... (10 more lines in profile-sim.txt)\n```" in text
    assert "line 41" not in text
    assert "line 5\n... (45 more lines" in render(tmp_path, "{{profile 5}}").text


def test_images_and_unincluded_tables_warn(tmp_path: Path) -> None:
    (tmp_path / "there.png").write_bytes(b"\x89PNG")
    (tmp_path / "orphan.md").write_text("| x |\n")
    (tmp_path / "README.md").write_text("an earlier rendering\n")
    out = render(tmp_path, "![a](there.png)\n![b](gone.png)\n![c](https://example.org/x.png)\n")
    assert "![b](gone.png)" in out.text
    assert out.warnings == [
        "warning: image res/gone.png is referenced but missing",
        "warning: res/orphan.md is not included by the template",
    ]
    assert "| `there.png` |" in out.text and "| `gone.png` | missing |" in out.text


def test_main_writes_the_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "template.md"
    template.write_text("# results\n\n{{include sim-tiny.md}}\n")
    results = tmp_path / "results"
    assert report.main(["--results", str(results), "--template", str(template)]) == 0
    assert capsys.readouterr().out.strip() == str(results / "README.md")
    text = (results / "README.md").read_text()
    assert text.startswith("<!-- Generated by bench/report.py")
    assert "sim-tiny.md is missing (run make bench)" in text


def test_the_real_template_renders(tmp_path: Path) -> None:
    """Every directive of bench/README.template.md is known, whatever the results directory holds."""
    out = render(tmp_path, (BENCH / "README.template.md").read_text())
    assert "not rendered" not in out.text
    assert all(w.startswith("warning: image res/") for w in out.warnings)
    assert "{{" not in out.text
