"""The GPU check: runs a CUDA build of flow on this machine's GPU against the
SD reference fixtures and the example graphs, prints speeds and the VRAM
peak, and exits non-zero when a result is off.

Needs only Python 3 (standard library) and the `flow` binary; no Rust, no
network. Usage, from a checkout's root on the GPU machine:

    python3 cuda/gpu_check.py [--flow target/cuda/flow.xz] [--models DIR] [--device cuda:0]

`--flow` may be the stripped binary or its `.xz` (see cuda/build.sh). The
CUDA libraries it links (cuBLAS, cuRAND, the runtime; 13.x) are looked up in
this Python's site-packages (torch's `nvidia/*` wheels) and put on
LD_LIBRARY_PATH. `--models` is a model folder (FLOW_MODEL_CACHE layout,
filled on a machine with network by `flow models pull NAME`) holding
`realesrgan-animevideov3-x4`, `minilm` and `smollm2-135m-instruct`; the
graphs whose models it lacks are reported as SKIPPED. `--device cpu` runs
the same checks on the CPU (to try the script without a GPU).

Checks (bounds and their reasons in cuda/README.md):
1. the tiny-sd fixtures (diffusers reference): the DDIM, Euler and DPM++ 2M
   4-step trajectories and DDIM img2img in float32, final latent and image
   within 1e-3 + 1e-2 |want| element-wise; the DDIM trajectory in float16
   within 1e-2 of the largest value;
2. graphs/txt2img.yaml and graphs/hires_fix.yaml on the device, their PNGs
   within 8 levels of the CPU's, with sampler it/s;
3. graphs/upscale.yaml (PNG within 2 levels of the CPU's) and
   graphs/rag.yaml (runs, answers), when their models are in `--models`.
"""

import argparse
import glob
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "tiny-sd"

failures = []


def report(ok: bool, what: str, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}", flush=True)
    if not ok:
        failures.append(what)


# --- reading results, standard library only ---------------------------------

def read_safetensors(path: Path) -> dict:
    """{name: (shape, [floats])} for F32/F16/BF16 tensors."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = (8 + n + o for o in info["data_offsets"])
        raw = data[start:end]
        if info["dtype"] == "F32":
            values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        elif info["dtype"] == "F16":
            values = list(struct.unpack(f"<{len(raw) // 2}e", raw))
        elif info["dtype"] == "BF16":
            values = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        else:
            continue
        out[name] = (info["shape"], values)
    return out


def only(path: Path) -> tuple:
    return next(iter(read_safetensors(path).values()))


def png_pixels(path: Path) -> tuple:
    """(width, height, channels, bytes) of an 8-bit non-interlaced PNG."""
    data = path.read_bytes()
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, color = ihdr[0], ihdr[1], ihdr[2], ihdr[3]
    assert depth == 8, f"{path}: {depth}-bit PNG"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw, stride = zlib.decompress(idat), w * channels
    out, prev = bytearray(), bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return w, h, channels, bytes(out)


def png_levels(a: Path, b: Path) -> int:
    pa, pb = png_pixels(a), png_pixels(b)
    if pa[:3] != pb[:3]:
        return 256
    return max(abs(x - y) for x, y in zip(pa[3], pb[3]))


# --- running flow -------------------------------------------------------------

def library_path() -> str:
    """Folders of this Python's NVIDIA wheels holding the CUDA 13 libraries."""
    dirs = []
    for site in sys.path:
        for lib in sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib"))):
            if glob.glob(os.path.join(lib, "lib*.so*")):
                dirs.append(lib)
    return ":".join(dict.fromkeys(dirs + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]))


class VramPeak:
    """Polls nvidia-smi for the GPU's used memory while a run goes."""

    def __init__(self, index: int):
        self.index, self.peak, self.stop = index, 0, threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
                self.peak = max(self.peak, int(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError):
                return
            self.stop.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class Flow:
    def __init__(self, binary: Path, device: str, models: Path | None, work: Path):
        self.binary, self.device, self.work = binary, device, work
        self.env = dict(os.environ, LD_LIBRARY_PATH=library_path(), RUST_BACKTRACE="0")
        self.env["FLOW_MODEL_CACHE"] = str(models) if models else str(work / "models")

    def run(self, graph: Path, device: str, *args: str) -> list:
        """`flow run --json` on `device`: the events; a failed run is reported and returns None."""
        cache = tempfile.mkdtemp(dir=self.work, prefix="cache-")
        cmd = [str(self.binary), "run", "--json", "--no-cache", "--cache-dir", cache, "--device", device, *args,
               str(graph)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=graph.parent)
        events = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode != 0:
            errors = [e.get("error", "") for e in events if e["event"] == "node_failed"]
            report(False, f"{graph.name} on {device}", f"exit {proc.returncode}: {errors or proc.stderr[-800:]}")
            return None
        return events


def sampler_its(events: list) -> str:
    """Sampler steps per second, from the progress events of `sd.sample` nodes."""
    rates = []
    for node in {e["node"] for e in events if e["event"] == "node_started" and e["op"] == "sd.sample"}:
        steps = [e for e in events if e["event"] == "progress" and e["node"] == node]
        if len(steps) >= 2 and steps[-1]["t_ms"] > steps[0]["t_ms"]:
            rates.append(f"{node} {(steps[-1]['step'] - steps[0]['step']) * 1000 / (steps[-1]['t_ms'] - steps[0]['t_ms']):.1f} it/s")
    return ", ".join(rates) or "no sampler progress"


# --- the checks -----------------------------------------------------------------

def fixture_graph(name: str, out: Path, **values: str) -> Path:
    """The graph template tests/fixtures/tiny-sd/graphs/NAME.yaml (shared with
    tests/sd_pipeline.rs) with its @KEY@ placeholders filled, written into
    `out` (its outputs land in `out/out/`)."""
    yaml = (FIXTURES / "graphs" / f"{name}.yaml").read_text()
    for key, value in dict(values, PIPELINE=str(FIXTURES / "pipeline")).items():
        yaml = yaml.replace(f"@{key}@", value)
    graph = out / f"{name}.yaml"
    graph.write_text(yaml)
    return graph


def close(got: tuple, want: tuple, atol: float, rtol: float) -> tuple:
    """(all within atol + rtol |want|, max abs diff)."""
    if list(got[0]) != list(want[0]):
        return False, float("inf")
    diffs = [abs(g - w) for g, w in zip(got[1], want[1])]
    ok = all(d <= atol + rtol * abs(w) for d, w in zip(diffs, want[1]))
    return ok, max(diffs)


def check_fixtures(flow: Flow) -> None:
    dev = flow.device
    for sampler, file in (("ddim", "trajectory_ddim"), ("euler", "trajectory_euler"), ("dpmpp_2m", "trajectory_dpmpp2m")):
        expected = FIXTURES / "expected" / f"{file}.safetensors"
        want = read_safetensors(expected)
        out = Path(tempfile.mkdtemp(dir=flow.work))
        graph = fixture_graph("trajectory", out, EXPECTED=str(expected), SAMPLER=sampler, PRECISION="f32")
        if flow.run(graph, dev) is None:
            continue
        for name, key in (("latent", "final_latent"), ("image", "image")):
            ok, diff = close(only(out / "out" / f"{name}.safetensors"), want[key], 1e-3, 1e-2)
            report(ok, f"tiny-sd {sampler} f32 {name}", f"max |diff| {diff:.2e} (bound 1e-3 + 1e-2 |want|)")
    expected = FIXTURES / "expected" / "trajectory_ddim.safetensors"
    out = Path(tempfile.mkdtemp(dir=flow.work))
    graph = fixture_graph("trajectory", out, EXPECTED=str(expected), SAMPLER="ddim", PRECISION="f16")
    if flow.run(graph, dev) is not None:
        got, want = only(out / "out" / "latent.safetensors"), read_safetensors(expected)["final_latent"]
        scale = max(abs(w) for w in want[1])
        err = max(abs(g - w) for g, w in zip(got[1], want[1])) / scale
        report(err < 1e-2, "tiny-sd ddim f16 latent", f"max |diff| {err:.2e} of the largest value (bound 1e-2)")
    # img2img: VAE encode with the reference's noise, then DDIM at denoise 0.5.
    expected = FIXTURES / "expected" / "img2img_ddim.safetensors"
    out = Path(tempfile.mkdtemp(dir=flow.work))
    graph = fixture_graph("img2img", out, EXPECTED=str(expected), INPUT=str(FIXTURES / "expected" / "input.png"))
    if flow.run(graph, dev) is not None:
        want = read_safetensors(expected)
        for name, key in (("init", "init_latents"), ("latent", "final_latent")):
            ok, diff = close(only(out / "out" / f"{name}.safetensors"), want[key], 1e-3, 1e-2)
            report(ok, f"tiny-sd img2img ddim f32 {name}", f"max |diff| {diff:.2e} (bound 1e-3 + 1e-2 |want|)")


def check_graph(flow: Flow, name: str, pngs: list, levels: int, needs: list) -> None:
    """Runs graphs/NAME on the device and on the CPU; its PNGs must agree within `levels`."""
    models = Path(flow.env["FLOW_MODEL_CACHE"])
    missing = [m for m in needs if not (models / m).exists()]
    if missing:
        print(f"SKIPPED {name}: models {', '.join(missing)} are not in {models} (not proven on this device)")
        return
    results = {}
    for device in dict.fromkeys([flow.device, "cpu"]):
        copy = Path(tempfile.mkdtemp(dir=flow.work)) / "graphs"
        shutil.copytree(ROOT / "graphs", copy, ignore=shutil.ignore_patterns("out"))
        shutil.copytree(ROOT / "scripts", copy.parent / "scripts", dirs_exist_ok=True)
        start = time.perf_counter()
        index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        with VramPeak(index) as vram:
            events = flow.run(copy / name, device)
        if events is None:
            return
        took = time.perf_counter() - start
        text = "".join(e["text"] for e in events if e["event"] == "token")
        vram_text = f", VRAM peak {vram.peak} MiB" if device != "cpu" and vram.peak else ""
        print(f"     {name} on {device}: {took:.2f} s{vram_text}; {sampler_its(events)}"
              + (f"; answer {text[:80]!r}" if text else ""))
        results[device] = copy
    if len(results) == 2:
        for png in pngs:
            diff = png_levels(results[flow.device] / png, results["cpu"] / png)
            report(diff <= levels, f"{name} {png}", f"{diff} level(s) from the CPU's (bound {levels})")
    elif results:
        report(True, name, "ran")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flow", default=str(ROOT / "target" / "cuda" / "flow.xz"))
    ap.add_argument("--models", default=None)
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flow-gpu-check-"))
    binary = Path(args.flow).resolve()
    if binary.suffix == ".xz":
        unpacked = work / "flow"
        unpacked.write_bytes(lzma.decompress(binary.read_bytes()))
        unpacked.chmod(0o755)
        binary = unpacked
    flow = Flow(binary, args.device, Path(args.models).resolve() if args.models else None, work)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=flow.env)
    if version.returncode != 0:
        sys.exit(f"the flow binary does not start: {version.stderr.strip()}")
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "no nvidia-smi"
    print(f"{version.stdout.strip()} on {args.device}; GPU: {gpu}")
    check_fixtures(flow)
    check_graph(flow, "txt2img.yaml", ["out/txt2img-42.png"], 8, [])
    check_graph(flow, "hires_fix.yaml", ["out/hires-42.png"], 8, [])
    check_graph(flow, "upscale.yaml", ["out/upscaled.png"], 2, ["realesrgan-animevideov3-x4"])
    check_graph(flow, "rag.yaml", [], 0, ["minilm", "smollm2-135m-instruct"])
    if failures:
        sys.exit(f"\n{len(failures)} check(s) failed: {', '.join(failures)}")
    print("\nall checks passed")


if __name__ == "__main__":
    main()
