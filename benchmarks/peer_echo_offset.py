"""Why lm-eval's `gguf` model scores near chance against llama-cpp-python's server.

lm-eval asks for the prompt's own token log-probabilities (`echo=True, logprobs=...`). llama-cpp-python
0.3.x fills them from logits row i for token i, but row i is the distribution *after* token i: each
reported value is log P(token_i | tokens up to and including i), not given the tokens before it.
This prints, token by token, what `create_completion(echo=True)` reports next to both rows.

    .venv/bin/python benchmarks/peer_echo_offset.py
"""

from pathlib import Path

import llama_cpp
import numpy as np

from pytest_slm.models.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Question: What sound does a cow make?\nAnswer: moo"


def main() -> None:
    gguf = load_registry(ROOT / "suites" / "models.toml")["smollm2-135m"].gguf_path()
    llm = llama_cpp.Llama(str(gguf), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    reported = llm.create_completion(PROMPT, max_tokens=1, echo=True, logprobs=1, temperature=0)["choices"][0][
        "logprobs"
    ]
    tokens = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(tokens)
    rows = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
    print(f"{'token':>10}  {'reported':>9}  {'row i-1 (right)':>15}  {'row i (wrong)':>13}")
    for i, token in enumerate(tokens[1:], start=1):
        print(
            f"{reported['tokens'][i]!r:>10}  {reported['token_logprobs'][i]:9.3f}  {rows[i - 1][token]:15.3f}  {rows[i][token]:13.3f}"
        )


if __name__ == "__main__":
    main()
