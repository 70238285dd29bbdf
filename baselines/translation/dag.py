"""DA-Transformer (Huang et al., ICML 2022, "Directed Acyclic Transformer for Non-Autoregressive Machine
Translation"), written after thu-coai/DA-Transformer@245a90fe (`fs_plugins/models/glat_decomposed_with_link.py`,
`fs_plugins/custom_ops/dag_loss.py`, `fs_plugins/criterions/nat_dag_loss.py`) in plain PyTorch.

The decoder runs on a graph of `upsample * source_length + 2` vertices (fairseq's `upsample_base=source`:
`<s>`, `<unk>` ..., `</s>` as decoder input), predicts a token distribution per vertex and, from the decoder
features concatenated with a learned position embedding (`links_feature=feature:position`), a left-to-right
transition matrix ("links") mixed over attention heads by a gate. Training maximises the probability of the
target (wrapped in `<s>` ... `</s>`) summed over all paths from the first to the last vertex (`dag_loss`, the
forward algorithm of upstream's `torch_dag_loss`). Decoding (`dag_greedy` / `dag_lookahead`, upstream's
`inference_lookahead_simple`): from vertex 0 follow the argmax link (greedy) or the argmax of link score +
`beta` x best token log-probability of the next vertex (lookahead) to the last vertex, emitting each vertex's
argmax token and merging consecutive repeats. Beam search (`dag_beam_search`) is upstream's
`inference_beamsearch` with the search of thu-coai/DAG-Search@d5056b8 (`python/dag_search.pyx`,
`python/SearchBeam.cpp`) rewritten in plain Python, without the n-gram LM.

`DATransformer`'s options (learned positions, GELU, post-norm, segment embedding, `</s>` on the source,
upstream's graph-size rules) run checkpoints trained by upstream's fairseq code, such as PDAT, imported by
`fairseq_dat.py`; with the defaults the model is the bundled one and runs the shared layers' own code.

Not here: glancing training (GLAT, upstream trains with it), Viterbi / joint-Viterbi, sampling, the n-gram LM
and n-gram repetition bans of upstream's beam search, the CUDA kernels (`dag_loss.cu`; the plain
PyTorch forms here are what upstream falls back to with `--torch-dag-loss`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.translation.ar import shared_embedding
from baselines.translation.layers import Decoder, Encoder, TransformerConfig, sinusoidal_positions
from baselines.translation.vocab import SPECIALS, Vocabulary

#: Upstream's README trains WMT models with `--upsample-scale 8`; the bundled nat-mini model uses 4 (shorter
#: graphs train faster on the CPU); the value is in the checkpoint's metadata and the method's signature.
DEFAULT_UPSAMPLE = 4
DECODE_STRATEGIES = ("greedy", "lookahead", "beamsearch")


def safe_logsumexp(x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
    """logsumexp that returns -inf (and a zero gradient, not NaN) where every entry is -inf, as upstream's
    `logsumexp_keepdim` (pytorch/pytorch#31829)."""
    m = x.max(dim=dim, keepdim=True).values.detach()
    empty = m == float("-inf")
    s = (x - m.masked_fill(empty, 0)).exp().sum(dim=dim, keepdim=True)
    out = s.masked_fill(empty, 1).log() + m.masked_fill(empty, float("-inf"))
    return out if keepdim else out.squeeze(dim)


def logsoftmax_gather(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, L, T): log P(target token i | vertex j) for every vertex j and target position i (upstream's
    `torch_dag_logsoftmax_gather_inplace` with select_idx = targets expanded over vertices), float32."""
    log_probs = torch.log_softmax(logits, -1, dtype=torch.float32)
    return log_probs.gather(-1, targets.unsqueeze(1).expand(-1, logits.shape[1], -1))


def dag_log_likelihood(match: Tensor, links: Tensor, output_length: Tensor, target_length: Tensor) -> Tensor:
    """log P(target) summed over all paths from vertex 0 to vertex output_length-1, per sentence (B,).

    `match` (B, T, L): log P(y_i | v_j); `links` (B, L, L): log transition probabilities i -> j (-inf where not
    allowed). Forward algorithm: f[0] = match[0] at vertex 0; f[i, v] = logsumexp_u(f[i-1, u] + links[u, v]) +
    match[i, v]; the result is f[target_length-1, output_length-1] (upstream's `torch_dag_loss`, which despite
    its name returns this log-likelihood; -inf where the graph is shorter than the target).
    """
    batch, tarlen, prelen = match.shape
    f = torch.full((batch, prelen), float("-inf"), dtype=match.dtype, device=match.device)
    f = f.index_put((torch.arange(batch, device=match.device), torch.zeros(batch, dtype=torch.long,
                                                                          device=match.device)), match[:, 0, 0])
    steps = [f]
    for i in range(1, tarlen):
        f = safe_logsumexp(f.unsqueeze(-1) + links, dim=1) + match[:, i]
        steps.append(f)
    table = torch.stack(steps, dim=1)  # (B, T, L)
    return table[torch.arange(batch, device=match.device), target_length - 1, output_length - 1]


def dag_loss(logits: Tensor, links: Tensor, graph_padding: Tensor, targets: Tensor, pad: int) -> Tensor:
    """Upstream's `_compute_dag_loss` (no label smoothing, no glancing): -(log P(y) / |y|) averaged over the
    batch, sentences whose graph cannot hold the target (log P = -inf) counted as 0 as upstream does."""
    output_length = (~graph_padding).sum(-1)
    target_length = targets.ne(pad).sum(-1)
    log_p = dag_log_likelihood(logsoftmax_gather(logits, targets).transpose(1, 2), links.float(),
                               output_length, target_length)
    log_p = log_p.masked_fill(log_p.isinf() | log_p.isnan(), 0)
    return -(log_p / target_length).mean()


def learned_position_ids(tokens: Tensor, padding_idx: int) -> Tensor:
    """fairseq's `make_positions` for a LearnedPositionalEmbedding: padding_idx + 1, + 2, ... at non-padding
    tokens, padding_idx at padding."""
    nonpad = tokens.ne(padding_idx).long()
    return torch.cumsum(nonpad, 1) * nonpad + padding_idx


def compute_links(features: Tensor, link_positions: Tensor, graph_padding: Tensor, query_linear: nn.Linear,
                  key_linear: nn.Linear, gate_linear: nn.Linear, heads: int) -> Tensor:
    """Log transition probabilities (B, L, L) (upstream's `extract_links`, infinite transition length).

    Each of `heads` heads scores vertex pairs by scaled dot products of query/key projections of
    [features; link positions], softmax over the later non-padding vertices; a per-vertex gate mixes the heads.
    Rows without any allowed transition (the last vertex, padding) are -inf."""
    batch, prelen, dim = features.shape
    head_dim = query_linear.out_features // heads
    x = torch.cat([features, link_positions], dim=-1)
    q = query_linear(x).reshape(batch, prelen, heads, head_dim).float()
    k = key_linear(x).reshape(batch, prelen, heads, head_dim).float()
    log_gates = F.log_softmax(gate_linear(x), dim=-1, dtype=torch.float32)
    content = torch.einsum("bicf,bjcf->bijc", q, k) / head_dim ** 0.5
    valid = (~graph_padding).unsqueeze(1) & torch.ones(prelen, prelen, dtype=torch.bool,
                                                        device=features.device).triu(1).unsqueeze(0)
    unused = valid.sum(dim=2, keepdim=True) == 0
    valid = valid | unused
    attention = F.log_softmax(content.masked_fill(~valid.unsqueeze(-1), float("-inf")), dim=2)
    attention = attention.masked_fill(unused.unsqueeze(-1), float("-inf"))
    return safe_logsumexp(attention + log_gates.unsqueeze(2), dim=-1)


def dag_decode(links: Tensor, token_log_probs: Tensor, output_length: Tensor, strategy: str = "lookahead",
               beta: float = 1.0, pad: int = Vocabulary.pad) -> list[list[int]]:
    """Upstream's `inference_lookahead_simple`: token ids read along one path from vertex 0 to the last vertex.

    greedy: next vertex = argmax link; lookahead: argmax of link + beta * (best token log-prob of the next
    vertex). Each visited vertex emits its argmax token; a token equal to the previous vertex's is merged."""
    if strategy not in ("greedy", "lookahead"):
        raise ValueError(f"dag_decode's strategy {strategy!r} is not greedy or lookahead (beamsearch is "
                         f"dag_beam_search)")
    best_log_probs, tokens = token_log_probs.max(dim=-1)
    if strategy == "lookahead":
        next_vertex = (links + best_log_probs.unsqueeze(1) * beta).max(dim=-1).indices
    else:
        next_vertex = links.max(dim=-1).indices
    tokens, next_vertex = tokens.tolist(), next_vertex.tolist()
    out = []
    for row, (length, hops) in enumerate(zip(output_length.tolist(), next_vertex)):
        last = tokens[row][0]
        j, result = 0, [last]
        while j != length - 1:
            j = hops[j]
            now = tokens[row][j]
            if now != pad and now != last:
                result.append(now)
            last = now
        out.append(result)
    return out


@dataclass(frozen=True)
class BeamSearchSettings:
    """Upstream's `--decode-*` beam search options and defaults (`glat_decomposed_with_link.py`); `beta` is the
    lookahead's `decode_beta`. Score of a hypothesis Y: log P(Y) / |Y|^alpha (upstream's `calculate_score` with
    gamma x n-gram LM score = 0), |Y| counting the tokens after `<s>`."""

    beam_size: int = 100
    max_beam_per_length: int = 10
    top_cand_n: int = 5
    top_p: float = 0.9
    alpha: float = 1.1
    beta: float = 1.0
    dedup: bool = False


def beam_candidates(links: Tensor, token_log_probs: Tensor, top_cand_n: int, beta: float
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Upstream's `inference_beamsearch` before the C++ call: for every vertex the `top_cand_n` best
    (next vertex, token) moves by link + beta x token log-prob, over each vertex's `top_cand_n` best tokens.
    Returns (scores, next vertices, tokens), each (B, L, top_cand_n), best first."""
    batch, prelen, _ = links.shape
    top_logits, top_logits_idx = token_log_probs.topk(top_cand_n, dim=-1)
    scores_all = links.unsqueeze(-1) + top_logits.unsqueeze(1) * beta
    scores, top_idx = scores_all.reshape(batch, prelen, -1).topk(top_cand_n, dim=-1)
    next_vertex = torch.div(top_idx, top_cand_n, rounding_mode="floor")
    rows = torch.arange(batch, device=links.device)[:, None, None].expand(*next_vertex.shape)
    return scores, next_vertex, top_logits_idx[rows, next_vertex, top_idx % top_cand_n]


def _logaddexp(a: float, b: float) -> float:
    top = max(a, b)
    if math.isinf(top):  # as upstream's logaddexp: -inf if the larger one is infinite
        return -math.inf
    return math.log(math.exp(a - top) + math.exp(b - top)) + top


def dag_search(scores: Tensor, next_vertex: Tensor, tokens: Tensor, output_length: Tensor, go: int,
               settings: BeamSearchSettings) -> tuple[list[list[int]], list[float]]:
    """DAG-Search's `dag_search` (no n-gram LM, no repetition bans) for one batch of `beam_candidates` output.

    A hypothesis is a token sequence (starting with `go`); it keeps log P summed over every explored path that
    emits it (`dagscore`) and, per vertex, over those paths ending there. At step s (vertex s, in order) the
    hypotheses with a path ending at s are ranked by dagscore / length^alpha: the best `max_beam_per_length` of
    each length, then the best `beam_size` overall (1 at the last vertex, which gives the result); each is
    extended along vertex s's candidate moves, best first, while the probabilities of the moves taken so far sum
    below `top_p`. Written in Python rather than compiled (the upstream extension needs kenlm and OpenMP):
    one sentence at a time, which is slow but only the path choice matters here. Returns (tokens, score)."""
    scores_l, next_l, tokens_l = scores.float().tolist(), next_vertex.tolist(), tokens.tolist()
    paths, final_scores = [], []
    for row, length in enumerate(output_length.tolist()):
        path, score = _search_one(scores_l[row], next_l[row], tokens_l[row], length, go, settings)
        if settings.dedup:
            path = [t for i, t in enumerate(path) if i == 0 or t != path[i - 1]]
        paths.append(path)
        final_scores.append(score)
    return paths, final_scores


def _search_one(scores, next_vertex, tokens, length, go, s: BeamSearchSettings) -> tuple[list[int], float]:
    # A node is a token sequence: parent node, token, length (tokens after `go`), dagscore.
    parent, word, size, dagscore = [-1], [go], [0], [0.0]
    children: dict[tuple[int, int], int] = {}
    step_score: dict[tuple[int, int], float] = {(0, 0): 0.0}  # (node, vertex) -> log P of paths ending there
    arrivals: dict[tuple[int, int], list[int]] = {(0, 0): [0]}  # (vertex, length) -> nodes, upstream's notify

    def rank(node: int) -> float:
        return dagscore[node] / size[node] ** s.alpha if size[node] else math.nan  # C++: 0/0 (only the root)

    def best(nodes: list[int], k: int) -> list[int]:
        return nodes if len(nodes) <= k else sorted(nodes, key=rank, reverse=True)[:k]

    beam: list[int] = []
    for step in range(length):
        last = step == length - 1
        beam = []
        for n in range(step + 1):
            beam += best(arrivals.get((step, n), []), 1 if last else s.max_beam_per_length)
        beam = best(beam, 1 if last else s.beam_size)
        if last:
            break
        for node in beam:
            here = step_score[(node, step)]
            taken = 0.0
            for add, nxt, tok in zip(scores[step], next_vertex[step], tokens[step]):
                if taken >= s.top_p:
                    break
                taken += math.exp(add)
                child = children.get((node, tok))
                if child is None:
                    child = children[(node, tok)] = len(word)
                    parent.append(node)
                    word.append(tok)
                    size.append(size[node] + 1)
                    dagscore.append(-math.inf)
                total = here + add
                dagscore[child] = _logaddexp(dagscore[child], total)
                key = (child, nxt)
                if key in step_score:
                    step_score[key] = _logaddexp(step_score[key], total)
                else:
                    step_score[key] = total
                    arrivals.setdefault((nxt, size[child]), []).append(child)
    node = beam[0]
    final = rank(node)
    out = []
    while node >= 0:
        out.append(word[node])
        node = parent[node]
    return out[::-1], final


def dag_beam_search(links: Tensor, token_log_probs: Tensor, output_length: Tensor,
                    settings: BeamSearchSettings = BeamSearchSettings(), go: int = Vocabulary.bos
                    ) -> tuple[list[list[int]], list[float]]:
    """Upstream's `decode_strategy=beamsearch` without the n-gram LM: `beam_candidates` then `dag_search`."""
    candidates = beam_candidates(links.float(), token_log_probs.float(), settings.top_cand_n, settings.beta)
    return dag_search(*candidates, output_length, go, settings)


#: The settings of upstream's model beyond `TransformerConfig` that a DATransformer can take (keyword arguments,
#: stored in a checkpoint's model settings); the defaults are the bundled nat-mini model's (the shared layers'
#: pre-norm ReLU blocks with sinusoidal positions), so checkpoints without them load unchanged.
DAT_OPTION_DEFAULTS = {"learned_pos": False, "activation": "relu", "normalize_before": True,
                       "segment_embedding": 0, "source_eos": False, "upsample_base": "source"}
UPSAMPLE_BASES = ("source", "upstream_source", "source_old", "predict")
#: fairseq's NAT length classifier has 256 rows (`decoder.embed_length`, lengths 0-255).
LENGTH_CLASSES = 256


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":  # fairseq's `gelu`: the exact (erf) form, computed in float32
        return lambda x: F.gelu(x.float()).type_as(x)
    raise ValueError(f"activation {name!r} is not relu or gelu")


def _block(x: Tensor, norm: nn.LayerNorm, sublayer, normalize_before: bool, dropout: nn.Module) -> Tensor:
    """One residual sub-block in fairseq's order: pre-norm LN -> f -> add, or post-norm f -> add -> LN."""
    if normalize_before:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def _encoder_layer(layer, x: Tensor, padding: Tensor, pre: bool, act) -> Tensor:
    """The shared `EncoderLayer`'s parameters run with `pre` (pre-/post-norm) and activation `act`."""
    x = _block(x, layer.self_attn_layer_norm, lambda h: layer.self_attn(h, h, padding), pre, layer.dropout)
    return _block(x, layer.final_layer_norm, lambda h: layer.fc2(layer.dropout(act(layer.fc1(h)))), pre,
                  layer.dropout)


def _decoder_layer(layer, x: Tensor, padding: Tensor, memory: Tensor, memory_padding: Tensor, pre: bool,
                   act) -> Tensor:
    x = _block(x, layer.self_attn_layer_norm, lambda h: layer.self_attn(h, h, padding), pre, layer.dropout)
    x = _block(x, layer.encoder_attn_layer_norm, lambda h: layer.encoder_attn(h, memory, memory_padding), pre,
               layer.dropout)
    return _block(x, layer.final_layer_norm, lambda h: layer.fc2(layer.dropout(act(layer.fc1(h)))), pre,
                  layer.dropout)


def learned_positions(max_positions: int, dim: int, padding_idx: int) -> nn.Embedding:
    """fairseq's LearnedPositionalEmbedding table: `max_positions + padding_idx + 1` rows, row padding_idx zero."""
    table = nn.Embedding(max_positions + padding_idx + 1, dim, padding_idx=padding_idx)
    nn.init.normal_(table.weight, mean=0.0, std=dim ** -0.5)
    with torch.no_grad():
        table.weight[padding_idx].zero_()
    return table


class DATransformer(nn.Module):
    """Encoder, bidirectional decoder over the upsampled graph, token projection (tied) and link attention.

    Options (keyword arguments; `DAT_OPTION_DEFAULTS`), for checkpoints trained by upstream's fairseq code such
    as PDAT (`examples/DA-Transformer/pretrain.sh`):
    - `learned_pos`: fairseq's learned positions (`encoder/decoder.embed_positions`, `--encoder-learned-pos
      --decoder-learned-pos`) instead of sinusoidal ones;
    - `activation`: `relu` or `gelu` (`--activation-fn`);
    - `normalize_before`: pre-norm layers with a final LayerNorm (ours), or, False, fairseq's post-norm default
      (LayerNorm after each residual, no final LayerNorm: `encoder/decoder.layer_norm` absent);
    - `segment_embedding`: the number of segment symbols of `--segment-embedding` (`--seg-tokens`); the decoder
      adds `decoder.embed_seg` rows 1 (graph vertices) and 2 (the last vertex), as upstream's `forward_decoder`;
    - `source_eos`: append `</s>` to the source, as fairseq's data does;
    - `upsample_base`: the graph size: `source` (ours: `upsample x words + 2`), or upstream's formulas:
      `upstream_source` (upstream's `source`: `int(upsample x words) + 1` with the source's `</s>`),
      `source_old` (`int(upsample x (words + 1))`, at least 2) or `predict` (`(length - 2) x upsample + 2`, the
      length from the classifier `decoder.embed_length` on the mean encoder state); upstream's are clipped to
      `max_graph - 1` as upstream does, and `upsample` may be fractional (`--decode-upsample-scale`).
    """

    def __init__(self, cfg: TransformerConfig, upsample: float = DEFAULT_UPSAMPLE, max_graph: int | None = None,
                 **options):
        """`max_graph`: rows of the link position table (fairseq's `max_target_positions`); default: the largest
        graph of a `cfg.max_positions`-word source."""
        super().__init__()
        unknown = sorted(set(options) - set(DAT_OPTION_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown DATransformer options {unknown}; known: {sorted(DAT_OPTION_DEFAULTS)}")
        self.options = {**DAT_OPTION_DEFAULTS, **options}
        if self.options["upsample_base"] not in UPSAMPLE_BASES:
            raise ValueError(f"upsample_base {self.options['upsample_base']!r} is not one of {UPSAMPLE_BASES}")
        self._act = _activation(self.options["activation"])
        self.cfg = cfg
        self.upsample = upsample
        self.max_graph = max_graph
        embedding = shared_embedding(cfg)
        self.encoder = Encoder(embedding, cfg)
        self.decoder = Decoder(embedding, cfg, causal=False)
        dim = cfg.embed_dim
        # fairseq's LearnedPositionalEmbedding: positions count from padding_idx + 1, row padding_idx is zero.
        self.decoder.link_positional = learned_positions(self.max_graph_length(), dim, cfg.padding_idx)
        self.decoder.query_linear = nn.Linear(2 * dim, dim)
        self.decoder.key_linear = nn.Linear(2 * dim, dim)
        self.decoder.gate_linear = nn.Linear(2 * dim, cfg.heads)
        if not self.options["normalize_before"]:  # fairseq's post-norm stacks have no final LayerNorm
            del self.encoder.layer_norm, self.decoder.layer_norm
        if self.options["learned_pos"]:
            self.encoder.embed_positions = learned_positions(cfg.max_positions, dim, cfg.padding_idx)
            self.decoder.embed_positions = learned_positions(self.max_graph_length(), dim, cfg.padding_idx)
        if self.options["segment_embedding"]:
            self.decoder.embed_seg = learned_positions(self.options["segment_embedding"], dim, 0)
        if self.options["upsample_base"] == "predict":
            self.decoder.embed_length = nn.Embedding(LENGTH_CLASSES, dim)
            nn.init.normal_(self.decoder.embed_length.weight, mean=0.0, std=dim ** -0.5)

    def max_graph_length(self) -> int:
        return self.max_graph or int(self.upsample * self.cfg.max_positions + 2)

    @property
    def plain(self) -> bool:
        """True for the default options: the shared layers' own forward passes are used unchanged."""
        return self.options == DAT_OPTION_DEFAULTS

    def prepare_source(self, src: Tensor) -> Tensor:
        """The encoder input: with `source_eos`, `</s>` after each right-padded sentence."""
        if not self.options["source_eos"]:
            return src
        lengths = src.ne(self.cfg.padding_idx).sum(1)
        out = F.pad(src, (0, 1), value=self.cfg.padding_idx)
        return out.scatter(1, lengths[:, None], Vocabulary.eos)

    def graph_lengths(self, src: Tensor, memory: Tensor, memory_padding: Tensor) -> Tensor:
        """Vertices per sentence for the (prepared) source `src`, following `upsample_base`."""
        base = self.options["upsample_base"]
        length_src = src.ne(self.cfg.padding_idx).sum(1)
        if base == "source":
            return length_src * self.upsample + 2
        if base == "upstream_source":  # the source's <s> / </s> are counted once, not upsampled
            specials = (src.eq(Vocabulary.bos) | src.eq(Vocabulary.eos)).sum(1)
            lengths = ((length_src - specials) * self.upsample).long().clip(min=0) + specials
        elif base == "source_old":
            lengths = (length_src * self.upsample).long().clip(min=2)
        else:  # predict: upstream's forward_length (mean of the non-padding encoder states) and argmax
            keep = (~memory_padding).unsqueeze(-1).to(memory.dtype)
            pooled = ((memory / keep.sum(1, keepdim=True)) * keep).sum(1)
            predicted = F.linear(pooled, self.decoder.embed_length.weight).max(-1).indices
            lengths = ((predicted - 2) * self.upsample).long().clamp(min=0) + 2
        return lengths.clip(max=self.max_graph_length() - 1)

    def graph_tokens(self, src: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Decoder input (B, L): `<s>`, `<unk>` x (upsample * source length), `</s>`, right-padded."""
        if lengths is None:
            lengths = src.ne(self.cfg.padding_idx).sum(1) * self.upsample + 2
        positions = torch.arange(int(lengths.max()), device=src.device)[None, :]
        tokens = torch.full(positions.shape, Vocabulary.unk, device=src.device).repeat(src.shape[0], 1)
        tokens = tokens.masked_fill(positions >= lengths[:, None], self.cfg.padding_idx)
        tokens[:, 0] = Vocabulary.bos
        return tokens.scatter(1, (lengths - 1)[:, None], Vocabulary.eos)

    def _embed(self, module, tokens: Tensor) -> Tensor:
        """Token embedding x sqrt(dim) plus learned positions (the non-plain path; fairseq's forward_embedding)."""
        x = math.sqrt(self.cfg.embed_dim) * module.embed_tokens(tokens)
        if self.options["learned_pos"]:
            return x + module.embed_positions(learned_position_ids(tokens, self.cfg.padding_idx))
        return x + sinusoidal_positions(tokens.shape[1], self.cfg.embed_dim, self.cfg.padding_idx, x.device)[None]

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(encoder states (B, S, D), padding mask) for a prepared source (`prepare_source`)."""
        if self.plain:
            return self.encoder(src)
        padding = src.eq(self.cfg.padding_idx)
        x = self.encoder.dropout(self._embed(self.encoder, src))
        x = x * (~padding).unsqueeze(-1).to(x.dtype)  # fairseq zeroes padding positions' inputs
        pre = self.options["normalize_before"]
        for layer in self.encoder.layers:
            x = _encoder_layer(layer, x, padding, pre, self._act)
        return (self.encoder.layer_norm(x) if pre else x), padding

    def decode_features(self, graph: Tensor, memory: Tensor, memory_padding: Tensor) -> Tensor:
        """Decoder features (B, L, D) of the graph input `graph`."""
        padding = graph.eq(self.cfg.padding_idx)
        if self.plain:
            x = self.decoder.embed(graph)
            for layer in self.decoder.layers:
                x = layer(x, padding, memory, memory_padding, False)
            return self.decoder.layer_norm(x)
        x = self._embed(self.decoder, graph)
        if self.options["segment_embedding"]:  # upstream's forward_decoder: 0 padding, 1 vertices, 2 the last
            segments = (~padding).long().masked_fill(graph.eq(Vocabulary.eos), 2)
            x = x + self.decoder.embed_seg(segments)
        x = self.decoder.dropout(x)
        pre = self.options["normalize_before"]
        for layer in self.decoder.layers:
            x = _decoder_layer(layer, x, padding, memory, memory_padding, pre, self._act)
        return self.decoder.layer_norm(x) if pre else x

    def forward(self, src: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(token logits (B, L, V), log links (B, L, L), graph padding mask (B, L))."""
        src = self.prepare_source(src)
        memory, memory_padding = self.encode(src)
        lengths = None if self.plain else self.graph_lengths(src, memory, memory_padding)
        graph = self.graph_tokens(src, lengths)
        padding = graph.eq(self.cfg.padding_idx)
        features = self.decode_features(graph, memory, memory_padding)
        logits = F.linear(features, self.decoder.embed_tokens.weight)
        link_positions = self.decoder.link_positional(learned_position_ids(graph, self.cfg.padding_idx))
        links = compute_links(features, link_positions, padding, self.decoder.query_linear,
                              self.decoder.key_linear, self.decoder.gate_linear, self.cfg.heads)
        return logits, links, padding

    def loss(self, src: Tensor, tgt: Tensor, vocab: Vocabulary) -> Tensor:
        """DAG loss for right-padded targets without `<s>`/`</s>` (they are added here, as fairseq's data has them).
        Training uses the graph size of `upsample_base=source`/`source_old`; `predict` (sized by the target during
        upstream's training) is for imported checkpoints' inference only."""
        if self.options["upsample_base"] == "predict":
            raise ValueError("DATransformer.loss: upsample_base='predict' sizes training graphs by the target, "
                             "which is not implemented; train with 'source' or 'source_old'")
        lengths = tgt.ne(vocab.pad).sum(1)
        wrapped = torch.full((tgt.shape[0], tgt.shape[1] + 2), vocab.pad, dtype=torch.long, device=tgt.device)
        wrapped[:, 0] = vocab.bos
        wrapped[:, 1:-1] = tgt
        wrapped = wrapped.scatter(1, (lengths + 1)[:, None], vocab.eos)
        logits, links, padding = self(src)
        return dag_loss(logits, links, padding, wrapped, vocab.pad)

    @torch.inference_mode()
    def translate(self, src: Tensor, strategy: str = "lookahead", beta: float = 1.0,
                  beam: BeamSearchSettings | None = None, specials: Collection[int] | None = None
                  ) -> list[list[int]]:
        """Target word ids (special symbols such as the path's `<s>` and `</s>` removed: `specials`, default
        our vocabulary's first six ids); `beam` holds the settings of `strategy="beamsearch"` (its own `beta`;
        upstream's defaults when None)."""
        logits, links, padding = self(src)
        if strategy == "beamsearch":
            paths, _ = dag_beam_search(links, logits.float().log_softmax(-1), (~padding).sum(-1),
                                       beam or BeamSearchSettings(beta=beta))
        else:
            paths = dag_decode(links, logits.float().log_softmax(-1), (~padding).sum(-1), strategy, beta,
                               self.cfg.padding_idx)
        if specials is None:
            return [[t for t in path if t >= len(SPECIALS)] for path in paths]
        return [[t for t in path if t not in specials] for path in paths]
