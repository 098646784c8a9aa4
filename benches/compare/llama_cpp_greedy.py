"""llama.cpp's greedy tokens for given prompt ids, through the `cyllama` wheel.

Records what `nodes/tests/llm_quantized.rs` compares flow's quantized path
with. Run (in a virtual environment with `pip install cyllama==0.2.18`):

    python benches/compare/llama_cpp_greedy.py MODEL.gguf STEPS ID ID ...

Prints one JSON object: the versions, the context settings and the greedy
ids (EOS is not treated as a stop). One thread, llama.cpp's defaults
otherwise (f16 KV cache).
"""

import json
import sys

import cyllama.llama.llama_cpp as cy


def main() -> None:
    model_path, steps, ids = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
    cy.disable_logging()
    cy.ggml_backend_load_all()
    model = cy.LlamaModel(model_path, cy.LlamaModelParams())
    params = cy.LlamaContextParams()
    params.n_ctx = len(ids) + steps
    params.n_batch = len(ids)
    params.n_threads = 1
    params.n_threads_batch = 1
    ctx = cy.LlamaContext(model, params)
    chain = cy.LlamaSamplerChainParams()
    sampler = cy.LlamaSampler(chain)
    sampler.add_greedy()
    out, pos = [], len(ids)
    ctx.decode(cy.llama_batch_get_one(ids))
    for _ in range(steps):
        best = sampler.sample(ctx, -1)
        out.append(best)
        ctx.decode(cy.llama_batch_get_one([best], pos))
        pos += 1
    print(json.dumps({
        "cyllama": "0.2.18",
        "ggml": cy.ggml_version(),
        "flash_attn_type": str(params.flash_attn_type),
        "type_k": str(params.type_k),
        "greedy_ids": out,
    }))


if __name__ == "__main__":
    main()
