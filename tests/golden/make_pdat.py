"""Golden outputs of upstream's own fairseq DA-Transformer with PDAT's model options, for the importer
`baselines/translation/fairseq_dat.py` and the options of `baselines/translation/dag.py`.

Upstream: thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c (Apache-2.0; it bundles its fairseq,
MIT), run from a checkout with its real fairseq and `fs_plugins` (nothing stubbed):

    PYTHONPATH=/path/to/omegaconf-2.1-and-hydra-1.1 python tests/golden/make_pdat.py /path/to/DA-Transformer

(omegaconf 2.1.2, hydra-core 1.1.2, antlr4-python3-runtime 4.8, bitarray, installed with `pip --target`; the
omegaconf < 2.1 that upstream's setup.py pins has no installable wheel metadata for today's pip.) On Python 3.11
fairseq's config dataclasses fail to import ("mutable default ... use default_factory"); `_python311_shim`
makes those dataclass instances hashable before their classes are processed, which changes no computation.

The model: `glat_decomposed_link_pretrain` built by fairseq's own argument parser, task `translation_dat_task`
and `build_model` with pretrain.sh's options (`--encoder-learned-pos --decoder-learned-pos --activation-fn gelu
--segment-embedding --seg-tokens 3 --upsample-base predict --share-all-embeddings --max-transition-length
99999`, post-norm by the architecture's default) at a tiny size (2+2 layers of 16, 4 heads, FFN 32; 20 source /
70 target positions; decode upsample scale 2.5), the dictionary upstream's `TranslationDATDict` (fairseq's four
specials, a 32-symbol dict.txt whose first entries are BERT's `[PAD]` `[unused0]`, then `[P0]` .. `[P2]`).
Weights: `golden_weights.seeded_fill` (seed 23), the link query/key projections damped x0.2 (`damp`:
near-uniform links, so greedy paths visit several vertices) and the decoder's positions x6 (else every vertex,
all `<unk>`, has the same argmax token), then the length classifier's rows 0-5 and 30-255 zeroed so
the predicted lengths fall in 6-29 (graphs of 12 to 69 vertices; longer ones clipped at 69 as upstream clips).

Saved, as fairseq's trainer saves (`cfg` = `OmegaConf.to_container(convert_namespace_to_omegaconf(args))`,
`model` = the state dict, `optimizer_history`, `extra_state`), with `checkpoint_utils.torch_persistent_save`:
tests/golden/pdat/checkpoint_pdat_tiny.pt, and its dict.txt. Outputs (tests/golden/pdat/pdat.safetensors), for
3 sources fed to upstream left-padded with `</s>` (fairseq's collate): the encoder states of the non-padding
positions, the predicted graph (`initialize_output_tokens`), the decoder features (`decoder.extract_features`
with `forward_decoder`'s segment ids), token logits and links (`extract_features(..., training=False)`,
99999-bounded links restored), `forward_decoder`'s greedy and lookahead (beta 1.0) output tokens, and the
graphs `initialize_output_tokens` gives with `upsample_base` `source_old` and `source` instead.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c"
OUT = Path(__file__).parent / "pdat"
SEED = 23
WORDS = ["[PAD]", "[unused0]"] + [f"w{i}" for i in range(30)]
#: Source word ids (ours and fairseq's agree: 4 + position in dict.txt), right-padded with 1.
SOURCES = [[6, 9, 12, 15, 20, 31], [7, 8, 30, 11], [33, 25]]
PAD, EOS = 1, 2
ARGV = ["--task", "translation_dat_task", "--arch", "glat_decomposed_link_pretrain", "--source-lang", "src",
        "--target-lang", "tgt", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "16",
        "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--upsample-base", "predict",
        "--upsample-scale", "4~8", "--seg-tokens", "3", "--links-feature", "feature:position",
        "--segment-embedding", "--max-source-positions", "20", "--max-target-positions", "70",
        "--encoder-learned-pos", "--decoder-learned-pos", "--share-all-embeddings", "--activation-fn", "gelu",
        "--apply-bert-init", "--decode-strategy", "greedy", "--decode-upsample-scale", "2.5",
        "--max-transition-length", "99999", "--criterion", "nat_dag_loss", "--length-loss-factor", "0",
        "--glat-p", "0.1", "--glance-strategy", "fix", "--dropout", "0.1"]


def _python311_shim() -> None:
    original = dataclasses._process_class

    def process_class(cls, *args, **kwargs):
        for value in list(vars(cls).values()):
            default = value.default if isinstance(value, dataclasses.Field) else value
            if dataclasses.is_dataclass(default) and not isinstance(default, type) and type(default).__hash__ is None:
                type(default).__hash__ = object.__hash__
        return original(cls, *args, **kwargs)

    dataclasses._process_class = process_class


def main(checkout: str) -> None:
    root = Path(checkout).resolve()
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _python311_shim()
    from fairseq import checkpoint_utils, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from golden_weights import damp, seeded_fill
    from omegaconf import OmegaConf

    OUT.mkdir(parents=True, exist_ok=True)
    dict_text = "".join(f"{w} 7\n" for w in WORDS)
    (OUT / "dict.txt").write_text(dict_text, encoding="utf-8")
    with tempfile.TemporaryDirectory() as data:
        for lang in ("src", "tgt"):
            Path(data, f"dict.{lang}.txt").write_text(dict_text, encoding="utf-8")
        cwd = os.getcwd()
        os.chdir(root)  # --user-dir fs_plugins
        try:
            parser = options.get_training_parser()
            args = options.parse_args_and_arch(parser, [data, "--user-dir", "fs_plugins"] + ARGV)
            task = tasks.setup_task(args)
            model = task.build_model(args)
        finally:
            os.chdir(cwd)
    assert args.encoder_normalize_before is False and args.decoder_normalize_before is False
    args.data = "data-bin/pdat_tiny"  # the temporary data directory's name would make the checkpoint differ per run
    torch.manual_seed(SEED)
    damp(seeded_fill(model, SEED), ["decoder.query_linear", "decoder.key_linear"], 0.2)
    damp(model, ["decoder.embed_positions"], 6.0)
    with torch.no_grad():
        model.decoder.embed_length.weight[:6].zero_()
        model.decoder.embed_length.weight[30:].zero_()
    model.eval()

    width = max(map(len, SOURCES)) + 1
    ours = torch.full((len(SOURCES), width - 1), PAD)
    upstream = torch.full((len(SOURCES), width), PAD)  # fairseq's collate: left-padded, </s> appended
    for i, s in enumerate(SOURCES):
        ours[i, :len(s)] = torch.tensor(s)
        upstream[i, width - len(s) - 1:] = torch.tensor(s + [EOS])
    lengths = upstream.ne(PAD).sum(1)
    t: dict[str, torch.Tensor] = {"src": ours, "src_upstream": upstream}
    with torch.no_grad():
        encoder_out = model.encoder(upstream, src_lengths=lengths)
        states = encoder_out["encoder_out"][0].transpose(0, 1)  # B x S x D, left-padded
        aligned = torch.zeros(len(SOURCES), width, states.shape[-1])
        for i, n in enumerate(lengths.tolist()):
            aligned[i, :n] = states[i, width - n:]
        t["encoder_out"] = aligned
        decoder_out = model.initialize_output_tokens(encoder_out, upstream)
        graph = decoder_out.output_tokens
        t["graph"] = graph
        # forward_decoder's net_input (segment ids and bound_end), computed as there
        bsz, seqlen = graph.shape
        position = (torch.arange(seqlen).unsqueeze(0).expand(bsz, -1) + 1).masked_fill(graph == PAD, 0)
        segid = position.masked_fill(graph != PAD, 1).masked_fill_(graph == EOS, 2)
        output_length = (graph != PAD).sum(dim=-1) - 1
        bound_end = torch.zeros_like(segid).masked_fill_(graph != PAD, 1) * output_length.unsqueeze(-1)
        net_input = {"prev_output_tokens_segid": segid, "bound_end": bound_end}
        features, _ = model.decoder.extract_features(graph, net_input, encoder_out=encoder_out, embedding_copy=False)
        t["features"] = features
        logits, links = model.extract_features(graph, encoder_out, net_input, 0, require_links=True, training=False)
        t["logits"], t["links"] = logits, model.restore_valid_links(links)
        for strategy in ("greedy", "lookahead"):
            model.args.decode_strategy = strategy
            t[f"tokens_{strategy}"] = model.forward_decoder(decoder_out, encoder_out).output_tokens
        for base in ("source_old", "source"):  # the other graph sizes (upsample_base), same model and scale
            model.args.upsample_base = base
            t[f"graph_{base}"] = model.initialize_output_tokens(encoder_out, upstream).output_tokens
        model.args.upsample_base = "predict"
    cfg = OmegaConf.to_container(convert_namespace_to_omegaconf(args), resolve=True, enum_to_str=True)
    state = {"args": None, "cfg": cfg, "model": model.state_dict(),
             "optimizer_history": [{"criterion_name": "NATDAGLoss", "optimizer_name": "FairseqAdam",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 0}],
             "extra_state": {"epoch": 1}}
    checkpoint_utils.torch_persistent_save(state, str(OUT / "checkpoint_pdat_tiny.pt"))
    save_file({k: v.contiguous() for k, v in t.items()}, str(OUT / "pdat.safetensors"),
              metadata={"upstream": UPSTREAM, "seed": str(SEED)})
    print({k: tuple(v.shape) for k, v in t.items()})
    print("graph lengths", graph.ne(PAD).sum(1).tolist())
    print("greedy", t["tokens_greedy"].tolist())


if __name__ == "__main__":
    main(sys.argv[1])
