"""The decoding-speedup protocol's interfaces and the models it decodes.

`interface` is the autoregressive model interface every strategy drives; `strategy` the base class of
strategies (`DecodingStrategy`, `Models`); `generation` the stop rules, result record and sampling every
strategy shares (`validate_result` checks them); `gpt` and `hf` adapt the project's own GPT and Hugging Face
causal LMs to the interface; `bundled` loads the small models and prompts that ship with the task (trained
by `train_tiny_kjv.py`). The strategies themselves, the AR baseline included, are methods in
`baselines/decoding`.
"""
