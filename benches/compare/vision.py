"""flow against ncnn on Real-ESRGAN, same model files, same threads, one run,
alternating.

Upscales a 256x256 image 4x with realesr-animevideov3 (the ncnn .param/.bin
of flow's model catalog, run by both), float32 on both sides (ncnn's fp16
storage and arithmetic turned off; flow computes in f32). For 1 and 2
threads, several times and alternating:

* flow: the release binary, `flow run --jobs 1` of a graph with one
  `image.load` and `--repeat` `image.upscale` nodes (one at a time); the
  first node's time includes loading the model, the median of the others is
  the warm time;
* ncnn: a fresh Python process with the `ncnn` wheel: load, one extraction
  (cold), then `--repeat - 1` more (warm).

Prints medians, flow/ncnn ratios (> 1: flow faster) and how far flow's
PNG is from ncnn's output (levels of 255). Usage, after `cargo build --release`:

    python3 benches/compare/vision.py [--runs 5] [--repeat 5]
"""

import argparse
import json
import statistics
import subprocess
import textwrap

from common import alternate, cpu_line, flow_events, model_path, node_ms, venv_python, workdir

NCNN = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, ncnn
    from PIL import Image
    param, threads, repeat, png, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    img = np.ascontiguousarray(img)
    t0 = time.perf_counter()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.load_param(param); net.load_model(param[:-len(".param")] + ".bin")
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(img))
        _, result = ex.extract("output")
        result = np.array(result)
        times.append((time.perf_counter() - t) * 1000)
    cold = (time.perf_counter() - t0) * 1000 - sum(times[1:])
    np.save(out, result)
    print(json.dumps({"cold_ms": cold, "warm_ms": statistics.median(times[1:]) if repeat > 1 else times[0]}))
    """
).replace("import json, sys, time", "import json, statistics, sys, time")

MAKE_PNG = textwrap.dedent(
    """
    import sys, numpy as np
    from PIL import Image
    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(7)
    img = np.stack([(x + y) / 2, 255 - x, (x * y) % 256], -1) * 0.7 + rng.integers(0, 77, (256, 256, 3))
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(sys.argv[1])
    """
)

COMPARE = textwrap.dedent(
    """
    import sys, numpy as np
    from PIL import Image
    ours = np.asarray(Image.open(sys.argv[1]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    theirs = np.round(np.clip(np.load(sys.argv[2]), 0, 1) * 255)
    print(int(np.abs(ours - theirs).max()))
    """
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    py = venv_python("ncnn", "numpy", "pillow")
    param = model_path("realesrgan-animevideov3-x4")
    work = workdir()
    png = work / "input.png"
    subprocess.run([str(py), "-c", MAKE_PNG, str(png)], check=True)
    # Each upscale feeds a cheap sink (a graph runs what its outputs need);
    # the PNG for the comparison comes from a second graph, run once.
    head = (f"flow: 1\nmodels:\n  net: realesrgan-animevideov3-x4\nnodes:\n"
            f"  picture:\n    op: image.load\n    in: {{ path: {json.dumps(str(png))} }}\n")
    nodes = "".join(
        f"  up{i}:\n    op: image.upscale\n    in: {{ model: $net, image: $picture, tile: {256 + i} }}\n"
        f"  show{i}:\n    op: debug.print\n    in: {{ value: $up{i} }}\n"
        for i in range(args.repeat)
    )
    graph = work / "upscale.yaml"
    graph.write_text(head + nodes)
    check = work / "check.yaml"
    check.write_text(head + "  up:\n    op: image.upscale\n    in: { model: $net, image: $picture }\n"
                     f"  save:\n    op: image.save\n    in: {{ image: $up, path: {json.dumps(str(work / 'flow.png'))} }}\n")
    print(f"model {param}\n256x256 -> 1024x1024, {args.runs} runs of {args.repeat} upscales each, alternating")
    print(cpu_line())
    def flow_side(threads: int) -> dict:
        ms = node_ms(flow_events(graph, threads, "--jobs", "1")[0], "up")
        return {"cold_ms": ms[0], "warm_ms": statistics.median(ms[1:]) if len(ms) > 1 else ms[0]}

    def ncnn_side(threads: int) -> dict:
        out = subprocess.run([str(py), "-c", NCNN, str(param), str(threads), str(args.repeat), str(png),
                              str(work / "ncnn.npy")], capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    for threads in (1, 2):
        med = alternate(args.runs, {"flow": lambda: flow_side(threads), "ncnn": lambda: ncnn_side(threads)})
        f, n = med["flow"], med["ncnn"]
        print(f"\n{threads} thread(s)          flow       ncnn   flow/ncnn")
        print(f"warm upscale ms  {f['warm_ms']:9.1f} {n['warm_ms']:9.1f}   {n['warm_ms'] / f['warm_ms']:.2f}x")
        print(f"first (load) ms  {f['cold_ms']:9.1f} {n['cold_ms']:9.1f}   {n['cold_ms'] / f['cold_ms']:.2f}x")
    flow_events(check, 2)
    levels = subprocess.run([str(py), "-c", COMPARE, str(work / "flow.png"), str(work / "ncnn.npy")],
                            capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nflow's PNG vs ncnn's output: at most {levels} level(s) of 255 apart")


if __name__ == "__main__":
    main()
