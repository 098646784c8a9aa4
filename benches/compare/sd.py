"""flow against diffusers (torch) on an SD 1.5-sized UNet step and VAE
decode, same shapes, same threads, one run, alternating.

For 1 and 2 threads, `--runs` times and alternating:

* flow: the `sd` criterion bench (`cargo bench --bench sd -- sd15`), whose
  SD 1.5-sized UNet and VAE (diffusers SD 1.5 configs, zero weights: the
  same arithmetic as trained ones) run one classifier-free-guided step (UNet
  on a batch of 2, 64x64 latent, 77 context tokens) and one 64x64 -> 512x512
  decode, a warm-up then `FLOW_SD_BENCH_RUNS` timed runs each;
* diffusers: a fresh Python process building `UNet2DConditionModel` and
  `AutoencoderKL` from the same configs (random weights), float32,
  `torch.set_num_threads`, under `torch.inference_mode`: a warm-up then the
  same number of timed runs.

Prints mean seconds and flow/torch ratios (> 1: flow faster). Usage:

    python3 benches/compare/sd.py [--runs 2] [--timed 2]
"""

import argparse
import json
import os
import re
import subprocess
import textwrap

from common import ROOT, alternate, cpu_line, venv_python

TORCH = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    threads, timed = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads); torch.manual_seed(0)
    unet = UNet2DConditionModel(
        act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=64).eval()
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, in_channels=3, out_channels=3, latent_channels=4,
        layers_per_block=2, norm_num_groups=32, sample_size=512).eval()
    latents, ctx = torch.randn(2, 4, 64, 64), torch.randn(2, 77, 768)
    latent = torch.randn(1, 4, 64, 64)
    def step():
        eps = unet(latents, 500, encoder_hidden_states=ctx).sample
        uncond, cond = eps.chunk(2)
        return uncond + 7.5 * (cond - uncond)
    def decode():
        return vae.decode(latent / 0.18215).sample
    out = {}
    with torch.inference_mode():
        for name, f in (("unet", step), ("vae", decode)):
            f()
            times = []
            for _ in range(timed):
                t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
            out[name] = statistics.mean(times)
    print(json.dumps(out))
    """
).replace("import json, sys, time", "import json, statistics, sys, time")


def bench_binary() -> str:
    """Builds the `sd` bench and returns its executable."""
    out = subprocess.run(["cargo", "bench", "--bench", "sd", "--no-run", "--message-format=json"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "sd" and msg.get("executable"):
            return msg["executable"]
    raise SystemExit("cargo did not report the sd bench executable")


def flow_times(binary: str, threads: int, timed: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), FLOW_SD_BENCH_RUNS=str(timed))
    err = subprocess.run([binary, "--bench", "sd15"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stderr
    mean = lambda case: float(re.search(rf"{case}: \d+ real runs, mean ([0-9.]+) s", err).group(1))
    return {"unet": mean("sd15_unet_cfg_64x64"), "vae": mean("sd15_vae_decode_64x64")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--timed", type=int, default=2)
    args = ap.parse_args()
    py = venv_python("torch", "diffusers", "numpy")
    binary = bench_binary()
    print(f"SD 1.5-sized UNet step with guidance (batch 2, 64x64 latent) and VAE decode (64x64 -> 512x512), "
          f"{args.runs} runs of {args.timed} timed calls, alternating")
    print(cpu_line())
    def torch_side(threads: int) -> dict:
        out = subprocess.run([str(py), "-c", TORCH, str(threads), str(args.timed)], capture_output=True,
                             text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    for threads in (1, 2):
        med = alternate(args.runs, {"flow": lambda: flow_times(binary, threads, args.timed),
                                    "torch": lambda: torch_side(threads)})
        f, t = med["flow"], med["torch"]
        print(f"\n{threads} thread(s), seconds     flow    torch   flow/torch")
        print(f"UNet step (guidance)  {f['unet']:8.2f} {t['unet']:8.2f}   {t['unet'] / f['unet']:.2f}x")
        print(f"VAE decode 512x512    {f['vae']:8.2f} {t['vae']:8.2f}   {t['vae'] / f['vae']:.2f}x")


if __name__ == "__main__":
    main()
