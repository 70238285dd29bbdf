"""Reference decoding strategies for the `decoding-speedup` tasks.

`interface` is the autoregressive model interface every strategy drives; `gpt` and `hf` adapt the
project's own GPT and Hugging Face causal LMs to it; one module per strategy (`ar`, `speculative`,
`blockwise`, `jacobi`, `early_exit`), each registering its method; `bundled` loads the small models
that ship with the project (trained by `train_tiny_kjv.py`).
"""
