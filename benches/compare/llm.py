"""flow against llama.cpp on the same GGUF, same threads, one run, alternating.

Not run by CI. Creates its own virtual environment (benches/compare/.venv)
with the `cyllama` wheel (llama.cpp), then for 1 and 2 threads runs, several
times and alternating:

* flow: the release binary `target/release/flow run` on a one-node
  `llm.generate` graph (the CLI path a user runs), greedy, with `--json`
  events: prefill and decode speeds from the node's report, time to the
  first token from process start (model load included), peak RSS;
* llama.cpp: a fresh Python process loading the model with cyllama and
  decoding greedily the same prompt tokens.

Prints medians and flow/llama.cpp ratios (> 1 means flow is faster or
smaller). Usage, from the repository root after `cargo build --release`:

    python3 benches/compare/llm.py [--runs 5] [--tokens 64]
"""

import argparse
import json
import os
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from common import FLOW, alternate, cpu_line, model_path as model_file, venv_python

MODEL_NAME = "smollm2-135m-instruct"
PROMPT = "What is the capital of France? Answer in one long paragraph about its history, people and places."

LLAMA_CPP = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    import cyllama.llama.llama_cpp as cy
    cy.disable_logging(); cy.ggml_backend_load_all()
    path, threads, n, ids = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [int(x) for x in sys.argv[4:]]
    model = cy.LlamaModel(path, cy.LlamaModelParams())
    p = cy.LlamaContextParams(); p.n_ctx = len(ids) + n + 8; p.n_batch = len(ids)
    p.n_threads = threads; p.n_threads_batch = threads
    ctx = cy.LlamaContext(model, p)
    s = cy.LlamaSampler(cy.LlamaSamplerChainParams()); s.add_greedy()
    t1 = time.perf_counter(); ctx.decode(cy.llama_batch_get_one(ids)); tok = s.sample(ctx, -1); t2 = time.perf_counter()
    pos = len(ids)
    for _ in range(n - 1):
        ctx.decode(cy.llama_batch_get_one([tok], pos)); pos += 1; tok = s.sample(ctx, -1)
    t3 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"prefill": len(ids) / (t2 - t1), "decode": (n - 1) / (t3 - t2), "ttft": t2 - t0, "rss_mb": rss}))
    """
)


def flow_run(flow: Path, graph: Path, threads: int, cache: str) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        ["/usr/bin/time", "-f", "RSS %M", str(flow), "run", "--json", "--no-cache", "--cache-dir", cache, str(graph)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    first, report = None, None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "token" and first is None:
            first = time.perf_counter() - t0
        if event["event"] == "message" and "tok/s" in event["text"]:
            report = event["text"]
    err = proc.stderr.read()
    proc.wait()
    rss = float([l for l in err.splitlines() if l.startswith("RSS ")][-1].split()[1]) / 1024
    # "... prompt 83 tokens at 210.5 tok/s, answer 64 tokens at 90.1 tok/s (MaxTokens)"
    words = report.replace(",", "").split()
    rates = [float(words[i - 1]) for i, w in enumerate(words) if w == "tok/s"]
    return {"prefill": rates[0], "decode": rates[1], "ttft": first, "rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    flow = FLOW
    py = venv_python("cyllama==0.2.18")
    work = Path(tempfile.mkdtemp(prefix="flow-compare-"))
    graph = work / "llm.yaml"
    graph.write_text(
        f"flow: 1\nmodels:\n  llm: {MODEL_NAME}\nnodes:\n  answer:\n    op: llm.generate\n"
        f"    in: {{ model: $llm, prompt: {json.dumps(PROMPT)}, max_tokens: {args.tokens}, temperature: 0,\n"
        f"          repeat_penalty: 1.0, stop: [] }}\n"
    )
    cache = str(work / "cache")
    # The model file flow uses (fetched once), and the prompt's ids.
    model_path = str(model_file(MODEL_NAME))
    ids = prompt_ids(py, model_path)
    print(f"model {model_path}\nprompt {len(ids)} tokens, {args.tokens} new tokens, {args.runs} runs each, alternating")
    print(cpu_line())

    def llama_cpp(threads: int) -> dict:
        out = subprocess.run([str(py), "-c", LLAMA_CPP, model_path, str(threads), str(args.tokens), *map(str, ids)],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    for threads in (1, 2):
        med = alternate(args.runs, {"flow": lambda: flow_run(flow, graph, threads, cache),
                                    "llama.cpp": lambda: llama_cpp(threads)})
        f, l = med["flow"], med["llama.cpp"]
        print(f"\n{threads} thread(s)      flow      llama.cpp   flow/llama.cpp")
        print(f"decode tok/s  {f['decode']:9.1f} {l['decode']:11.1f}   {f['decode'] / l['decode']:.2f}x")
        print(f"prefill tok/s {f['prefill']:9.1f} {l['prefill']:11.1f}   {f['prefill'] / l['prefill']:.2f}x")
        print(f"first token s {f['ttft']:9.3f} {l['ttft']:11.3f}   {l['ttft'] / f['ttft']:.2f}x (flow - llama.cpp = {f['ttft'] - l['ttft']:+.3f} s)")
        print(f"peak RSS MB   {f['rss_mb']:9.1f} {l['rss_mb']:11.1f}   {l['rss_mb'] / f['rss_mb']:.2f}x")


def prompt_ids(py: Path, model_path: str) -> list:
    """The chat-templated prompt ids, from llama.cpp's own tokenizer and template."""
    code = textwrap.dedent(
        """
        import json, sys
        import cyllama.llama.llama_cpp as cy
        cy.disable_logging()
        m = cy.LlamaModel(sys.argv[1], cy.LlamaModelParams())
        text = ("<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n"
                "<|im_start|>user\\n" + sys.argv[2] + "<|im_end|>\\n<|im_start|>assistant\\n")
        print(json.dumps(m.get_vocab().tokenize(text, add_special=False, parse_special=True)))
        """
    )
    return json.loads(subprocess.run([str(py), "-c", code, model_path, PROMPT], capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    main()
