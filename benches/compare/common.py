"""What the comparison scripts share: their virtual environment with the
peers' Python packages, the flow binary, and running `flow run --json`.

Every script alternates flow and its peer in one run on this machine, with
the same weights and thread count, and prints medians and ratios (> 1 means
flow is faster). None of them runs in CI.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "benches" / "compare" / ".venv"
FLOW = ROOT / "target" / "release" / "flow"


def venv_python(*packages: str) -> Path:
    """The environment's python, with `packages` (pip specifiers) installed."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    missing = [p for p in packages if subprocess.run([str(py), "-m", "pip", "show", "-q", p.split("=")[0]],
                                                     capture_output=True).returncode != 0]
    if missing:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *missing], check=True)
    return py


def model_path(name: str) -> Path:
    """The installed path of a catalog model (fetched once by `flow models pull`)."""
    listing = subprocess.run([str(FLOW), "models", "pull", name], check=True, capture_output=True, text=True).stdout
    line = next(l for l in listing.splitlines() if l.startswith(f"{name}: "))
    return Path(line.split(": ", 1)[1].split(" (fingerprint")[0].strip())


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="flow-compare-"))


def flow_events(graph: Path, threads: int, *args: str) -> tuple[list, float]:
    """Runs `flow run --json --no-cache` on `graph` with `threads` threads
    and a fresh cache folder: the events, and the peak RSS in MB."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cache = tempfile.mkdtemp(prefix="flow-compare-cache-")
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "RSS %M", str(FLOW), "run", "--json", "--no-cache", "--cache-dir", cache, *args, str(graph)],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0:
        sys.exit(f"flow failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rss = float([l for l in proc.stderr.splitlines() if l.startswith("RSS ")][-1].split()[1]) / 1024
    return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")], rss


def node_ms(events: list, prefix: str) -> list:
    """The run times (ms) of the nodes whose names start with `prefix`, in
    the order they finished."""
    return [e["ms"] for e in events if e["event"] == "node_finished" and e["node"].startswith(prefix)]


def cpu_line() -> str:
    model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[1].splitlines()[0]
    return f"{model.strip()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def alternate(runs: int, sides: dict) -> dict:
    """Calls each side (name -> function returning {metric: value}) in turn,
    `runs` times: the median of each metric per side."""
    results = {name: [] for name in sides}
    for _ in range(runs):
        for name, measure in sides.items():
            results[name].append(measure())
    return {name: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for name, rs in results.items()}
