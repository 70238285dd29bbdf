"""Reference decoding strategies for the `decoding-speedup` tasks.

One module per strategy (`ar`, the baseline the task times against, `speculative`, `blockwise`, `jacobi`,
`early_exit`, `prompt_lookup`, `lookahead`, `ffn_skip`, `linearized`, `linearized_medusa`, ...), each registering its method. The interfaces they implement and the models they decode are
the protocol's, in `harness/protocols/decoding`.
"""
