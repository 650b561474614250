"""The replay benchmark compares like with like.

healer, and SEC with ``bench/sec/healer_kinds.sec``, must both count exactly what
``bench/gen_mixed_log.py`` says it wrote; otherwise a throughput ratio between them
means nothing. No wall-clock thresholds here: speed is for the benchmark to report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LINES = 20_000
SEED = 7
RATE = 0.05  # high enough that every kind appears in 20,000 lines

Truth = tuple[Path, dict[str, int]]


def generate(out: Path, lines: int, seed: int, rate: float) -> dict[str, object]:
    """Run the generator as the benchmark does and return its ground truth."""
    cmd = [sys.executable, str(BENCH / "gen_mixed_log.py"), str(lines), str(out)]
    cmd += ["--seed", str(seed), "--relevant-rate", str(rate)]
    subprocess.run(cmd, check=True)
    truth: dict[str, object] = json.loads(Path(f"{out}.truth.json").read_text(encoding="utf-8"))
    return truth


def healer_counts(path: Path) -> dict[str, object]:
    """``healer replay --format counts``: one JSON object on stdout."""
    cmd = [sys.executable, "-m", "healer", "replay", "--format", "counts", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts: dict[str, object] = json.loads(proc.stdout)
    return counts


def nonzero(kinds: object) -> dict[str, int]:
    assert isinstance(kinds, dict)
    return {str(k): int(v) for k, v in kinds.items() if v}


@pytest.fixture(scope="module")
def mixed_log(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    out = tmp_path_factory.mktemp("bench") / "mixed.log"
    truth = generate(out, LINES, SEED, RATE)
    return out, nonzero(truth["kinds"])


def test_generator_writes_every_kind_and_exactly_n_lines(mixed_log: Truth) -> None:
    path, kinds = mixed_log
    truth = json.loads(Path(f"{path}.truth.json").read_text(encoding="utf-8"))
    assert set(kinds) == set(truth["kinds"])  # every kind appears at least once
    assert path.read_bytes().count(b"\n") == LINES == truth["lines"]
    assert sum(kinds.values()) == truth["relevant_records"]


def test_generator_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    generate(first, 3000, 11, 0.05)
    generate(second, 3000, 11, 0.05)
    assert first.read_bytes() == second.read_bytes()
    assert Path(f"{first}.truth.json").read_bytes() == Path(f"{second}.truth.json").read_bytes()


def test_healer_counts_equal_truth(mixed_log: Truth) -> None:
    path, kinds = mixed_log
    got = healer_counts(path)
    assert got["lines"] == LINES
    assert nonzero(got["kinds"]) == kinds
    assert got["events"] == sum(kinds.values())


def test_filler_gives_healer_no_event(tmp_path: Path) -> None:
    path = tmp_path / "filler.log"
    generate(path, LINES, SEED, 0.0)
    got = healer_counts(path)
    assert got["events"] == 0, got["kinds"]


def test_sec_counts_equal_truth(mixed_log: Truth) -> None:
    sec = shutil.which("sec")
    if sec is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SEC is required in CI to check the benchmark's rules: apt-get install sec")
        pytest.skip("SEC is not installed (apt-get install sec)")
    path, kinds = mixed_log
    cmd = [
        sec,
        f"--conf={BENCH / 'sec' / 'healer_kinds.sec'}",
        f"--input={path}",
        "--fromstart",
        "--notail",
        "--intevents",
        "--nochildterm",
        "--log=/dev/null",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    dump = [line for line in proc.stdout.splitlines() if line.startswith("HEALER_KIND_COUNTS")]
    assert len(dump) == 1, proc.stdout
    got = dict(item.split("=", 1) for item in dump[0].split()[1:])
    assert {k: int(v) for k, v in got.items()} == kinds
    assert "HEALER_STORM" in proc.stdout  # the restart-storm rule fired on the exits


# --- the second generator's shapes (bench/gen_field_shapes.py) ------------------------

SHAPES = ("vfsd-debug", "ch-verbose", "kata-journald", "worst")


def sec_counts(path: Path, rules: Path) -> dict[str, int]:
    sec = shutil.which("sec")
    if sec is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SEC is required in CI to check the benchmark's rules: apt-get install sec")
        pytest.skip("SEC is not installed (apt-get install sec)")
    cmd = [sec, f"--conf={rules}", f"--input={path}", "--fromstart", "--notail"]
    cmd += ["--intevents", "--nochildterm", "--log=/dev/null"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    dump = [line for line in proc.stdout.splitlines() if line.startswith("HEALER_KIND_COUNTS")]
    assert len(dump) == 1, proc.stdout
    return {k: int(v) for k, v in (item.split("=", 1) for item in dump[0].split()[1:])}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_is_counted_alike_by_healer_and_the_prefiltered_sec(
    shape: str, tmp_path: Path
) -> None:
    """The headline compares healer with SEC behind its prefilter rule on these logs: both
    must count what the generator says it wrote (and the near misses as nothing)."""
    sys.path.insert(0, str(BENCH))
    try:
        import replay_throughput  # noqa: PLC0415 - a bench script, found on its own path
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / f"{shape}.log"
    cmd = [sys.executable, str(BENCH / "gen_field_shapes.py"), shape, "4000", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    truth = nonzero(json.loads(Path(f"{out}.truth.json").read_text(encoding="utf-8"))["kinds"])
    assert sum(truth.values()) > 10  # events were written, to be found
    assert nonzero(healer_counts(out)["kinds"]) == truth
    rules = replay_throughput.write_prefiltered_rules(tmp_path)
    assert sec_counts(out, rules) == truth
