"""flow against sentence-transformers on all-MiniLM-L6-v2, same weights,
same threads, one run, alternating.

Embeds 256 sentences (the corpus of graphs/data, cut at ". ", repeated to
256, about 20 words each) at batch 32 and batch 1, for 1 and 2 threads,
several times and alternating:

* flow: the release binary, `flow run --jobs 1` of a graph with `--repeat`
  `embed.text` nodes per batch size (one at a time; the memo of earlier
  embeddings is written but, under `--no-cache`, never read, so every node
  computes every text); the first node also loads the model and is left
  out, the median of the others counts;
* sentence-transformers (torch, CPU): a fresh Python process loading the
  same folder, `torch.set_num_threads`, one warm-up `encode`, then
  `--repeat` encodes per batch size.

Prints sentences/s, flow/sentence-transformers ratios (> 1: flow faster)
and the smallest cosine between the two sides' embeddings. Usage, after
`cargo build --release`:

    python3 benches/compare/embed.py [--runs 5] [--repeat 3]
"""

import argparse
import json
import statistics
import subprocess
import textwrap

from common import ROOT, alternate, cpu_line, flow_events, model_path, node_ms, venv_python, workdir

SBERT = textwrap.dedent(
    """
    import json, statistics, sys, time
    import torch
    from sentence_transformers import SentenceTransformer
    from safetensors.numpy import save_file
    path, threads, repeat, texts_file, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.set_num_threads(threads)
    texts = json.load(open(texts_file))
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = 256
    first = model.encode(texts, batch_size=32, normalize_embeddings=True)
    save_file({"e": first}, out)
    rates = {}
    for batch in (32, 1):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            model.encode(texts, batch_size=batch, normalize_embeddings=True)
            times.append(time.perf_counter() - t)
        rates[f"batch{batch}"] = len(texts) / statistics.median(times)
    print(json.dumps(rates))
    """
)

COSINE = textwrap.dedent(
    """
    import sys, numpy as np
    from safetensors.numpy import load_file
    a = next(iter(load_file(sys.argv[1]).values())); b = load_file(sys.argv[2])["e"]
    a = a / np.linalg.norm(a, axis=1, keepdims=True); b = b / np.linalg.norm(b, axis=1, keepdims=True)
    print(f"{(a * b).sum(1).min():.6f}")
    """
)


def sentences(n: int) -> list:
    text = " ".join(p.read_text() for p in sorted((ROOT / "graphs" / "data" / "corpus").glob("*")) if p.is_file())
    parts = [s.strip() for s in " ".join(text.split()).split(". ") if len(s.split()) >= 8]
    return [(parts[i % len(parts)] + ".") for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    py = venv_python("sentence-transformers", "safetensors", "numpy")
    model = model_path("minilm")
    work = workdir()
    texts = sentences(256)
    (work / "texts.json").write_text(json.dumps(texts))
    nodes = ""
    for batch in (32, 1):
        # One more node than counted: the first loads the model.
        for i in range(args.repeat + 1):
            # A trailing space per node keeps the nodes' inputs distinct
            # (the tokens are the same).
            varied = [texts[0] + " " * (i + 1)] + texts[1:]
            nodes += f"  b{batch}_{i}:\n    op: embed.text\n    in: {{ model: $m, batch: {batch}, texts: {json.dumps(varied)} }}\n"
            # A graph runs what its outputs need: a cheap sink for each.
            nodes += f"  show{batch}_{i}:\n    op: debug.print\n    in: {{ value: $b{batch}_{i} }}\n"
    graph = work / "embed.yaml"
    graph.write_text(f"flow: 1\nmodels:\n  m: minilm\nnodes:\n{nodes}")
    check = work / "check.yaml"
    check.write_text(
        f"flow: 1\nmodels:\n  m: minilm\nnodes:\n"
        f"  e:\n    op: embed.text\n    in: {{ model: $m, texts: {json.dumps(texts)} }}\n"
        f"  save:\n    op: tensor.save\n    in: {{ tensor: $e, path: {json.dumps(str(work / 'flow.safetensors'))} }}\n"
    )
    words = statistics.mean(len(t.split()) for t in texts)
    print(f"model {model}\n{len(texts)} sentences, {words:.1f} words each on average, {args.runs} runs, alternating")
    print(cpu_line())
    def flow_side(threads: int) -> dict:
        events = flow_events(graph, threads, "--jobs", "1")[0]
        rates = {}
        for batch in (32, 1):
            ms = node_ms(events, f"b{batch}_")
            # The first node to finish also loaded the model.
            rates[f"batch{batch}"] = len(texts) / (statistics.median(ms[1:] if batch == 32 else ms) / 1000)
        return rates

    def sbert_side(threads: int) -> dict:
        out = subprocess.run([str(py), "-c", SBERT, str(model), str(threads), str(args.repeat),
                              str(work / "texts.json"), str(work / "sbert.safetensors")],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    for threads in (1, 2):
        med = alternate(args.runs, {"flow": lambda: flow_side(threads), "sbert": lambda: sbert_side(threads)})
        f, s = med["flow"], med["sbert"]
        print(f"\n{threads} thread(s), sentences/s   flow   sentence-transformers   flow/st")
        for batch in (32, 1):
            k = f"batch{batch}"
            print(f"batch {batch:2}                 {f[k]:7.1f} {s[k]:15.1f}          {f[k] / s[k]:.2f}x")
    flow_events(check, 2)
    cos = subprocess.run([str(py), "-c", COSINE, str(work / "flow.safetensors"), str(work / "sbert.safetensors")],
                         capture_output=True, text=True, check=True).stdout.strip()
    print(f"\nsmallest cosine between flow's and sentence-transformers' embeddings: {cos}")


if __name__ == "__main__":
    main()
