"""Import a fairseq DA-Transformer checkpoint (thu-coai/DA-Transformer@245a90f, `glat_decomposed_link*`) as an
ARBench `dat` checkpoint, without unpickling anything outside an allow-list.

fairseq checkpoints are pickles (`torch.save` of a dict with `args` (argparse.Namespace, older fairseq) or
`cfg` (a dict whose `model` is a Namespace for legacy architectures), `model` (the state dict),
`optimizer_history`, `extra_state` ...). They are read with `torch.load(weights_only=True)` and this module's
explicit allow-list (`SAFE_GLOBALS`: argparse.Namespace and numpy scalars); anything else (a LightSeq object,
an omegaconf node, a class from an arbitrary module) is refused before it is built, with a command that strips
the checkpoint to its weights and arguments where it is trusted.

Our modules (`layers.py`, `dag.py`) implement one configuration of upstream's model: shared embeddings,
pre-norm layers, ReLU, sinusoidal positions, links from `feature:position` with unbounded transitions, graph
size `upsample x source words + 2` (`upsample_base=source`, integer scale; upstream counts the source's own
special tokens instead of the 2), and our vocabulary's six special symbols first. A checkpoint with any other
setting is refused with the list of what does not fit, rather than loaded into the wrong network. Upstream's
README and `examples/DA-Transformer/pretrain.sh` train with `--encoder-learned-pos --decoder-learned-pos
--activation-fn gelu`, the latter (the released PDAT checkpoint: English pre-training, LightSeq,
`--segment-embedding`) too: such checkpoints are refused until the modules grow those options, and PDAT would
need fine-tuning for translation anyway.

    python -m baselines.translation.fairseq_dat --input checkpoint.pt --dict dict.txt --langpair en-de \\
        --output dat-imported.safetensors
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.translation.checkpoint import save_checkpoint
from baselines.translation.dag import DATransformer
from baselines.translation.layers import TransformerConfig
from baselines.translation.vocab import SPECIALS, Vocabulary
from harness.errors import ArbenchError

#: The globals a fairseq checkpoint of this model may reference besides torch's own weights-only set.
SAFE_GLOBALS = [argparse.Namespace, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)),
                type(np.dtype(np.int64)), np._core.multiarray.scalar]  # numpy scalars in fairseq's meter states
LIGHTSEQ_CONVERSION = ("python3 ./fs_plugins/scripts/convert_ls_to_fs.py --input ls.pt --output fs.pt  "
                       "(from thu-coai/DA-Transformer)")
STRIP_COMMAND = ("python -c \"import torch; s = torch.load('IN.pt', map_location='cpu', weights_only=False); "
                 "a = s.get('args') or s['cfg']['model']; torch.save({'args': a, 'model': s['model']}, "
                 "'OUT.pt')\"")
#: Entries of the state dict that our modules do not hold: fairseq's version counters and sinusoidal
#: position buffers, the length predictor (unused with upsample_base=source), the output projection (checked
#: to be the shared embedding).
DROPPED = ("encoder.version", "decoder.version", "encoder.embed_positions._float_tensor",
           "decoder.embed_positions._float_tensor", "decoder.embed_length.weight", "decoder.output_projection.weight")


def read_fairseq_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, read with the weights-only unpickler plus `SAFE_GLOBALS`."""
    if not Path(path).is_file():
        raise ArbenchError(f"no fairseq checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        globals_named = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if not globals_named:  # torch wraps every unpickler error; only the global ones concern the allow-list
            raise ArbenchError(f"{path} is not a torch.save file the weights-only reader can read "
                               f"({_reader_error(exc)})") from None
        raise ArbenchError(
            f"{path} references objects outside the allow-list of a fairseq DA-Transformer checkpoint "
            f"({globals_named[0]}); it was not unpickled. Where you trust the file, keep only its weights and "
            f"arguments: {STRIP_COMMAND.replace('IN.pt', str(path))}") from None
    except Exception as exc:  # torch raises RuntimeError / zip errors for files that are not torch.save output
        raise ArbenchError(f"{path} is not a torch.save file ({exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or (
            state.get("args") is None and not isinstance(state.get("cfg"), dict)):
        raise ArbenchError(f"{path} is not a fairseq checkpoint: expected a dict with 'model' (the state dict) and "
                           f"'args' or 'cfg' (the training arguments)")
    return state


def _reader_error(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if "WeightsUnpickler error" in line]
    return after[0] if after else lines[-1]


def model_arguments(state: dict[str, Any]) -> dict[str, Any]:
    args = state.get("args")
    if args is None:
        args = state["cfg"].get("model")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, dict):
        return args
    raise ArbenchError("the checkpoint's 'args' / 'cfg.model' is neither a Namespace nor a dict")


def check_arguments(args: dict[str, Any]) -> None:
    """Refuse (listing every mismatch) what our modules do not implement."""
    arch = str(args.get("arch") or args.get("_name") or "")
    if arch.startswith("ls_"):
        raise ArbenchError(f"the checkpoint is a LightSeq model ({arch}: fused layer parameters); convert it to "
                           f"fairseq's layout first: {LIGHTSEQ_CONVERSION}")
    if "decomposed_link" not in arch:
        raise ArbenchError(f"the checkpoint's architecture {arch!r} is not a DA-Transformer (glat_decomposed_link*)")
    wanted = {
        "share_all_embeddings": True, "encoder_normalize_before": True, "decoder_normalize_before": True,
        "encoder_learned_pos": False, "decoder_learned_pos": False, "activation_fn": "relu",
        "links_feature": "feature:position", "max_transition_length": -1, "segment_embedding": False,
        "upsample_base": "source", "layernorm_embedding": False, "no_scale_embedding": False,
    }
    problems = [f"{k}={args.get(k)!r} (ours: {v!r})" for k, v in wanted.items() if args.get(k, v) != v]
    scale = args.get("upsample_scale")
    if not (isinstance(scale, (int, float)) or str(scale).replace(".", "", 1).isdigit()) or float(scale) != int(
            float(scale)):
        problems.append(f"upsample_scale={scale!r} (ours: an integer)")
    for enc, dec in (("encoder_embed_dim", "decoder_embed_dim"), ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim"),
                     ("encoder_attention_heads", "decoder_attention_heads")):
        if args.get(enc) != args.get(dec):
            problems.append(f"{enc}={args.get(enc)} != {dec}={args.get(dec)} (ours: equal)")
    if problems:
        raise ArbenchError("the checkpoint's model settings do not fit ARBench's DA-Transformer modules: "
                           + "; ".join(problems))


def read_dictionary(path: Path) -> Vocabulary:
    """A fairseq dict.txt (`word count` per line; fairseq puts <s> <pad> </s> <unk> before it)."""
    words = [line.rsplit(" ", 1)[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + words
    if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
        raise ArbenchError(f"{path}: our vocabulary has {SPECIALS} first (ids 0-5); this dictionary has "
                           f"{tokens[4:6]} at ids 4-5, so the embedding rows would mean other words")
    return Vocabulary(tokens)


def import_dat(path: Path, dictionary: Path) -> tuple[DATransformer, Vocabulary, dict[str, Any]]:
    """Our DATransformer with the checkpoint's weights (strict: every tensor used, every shape checked)."""
    state = read_fairseq_checkpoint(path)
    args = model_arguments(state)
    check_arguments(args)
    vocab = read_dictionary(dictionary)
    weights = dict(state["model"])
    embedding = weights["encoder.embed_tokens.weight"]
    projection = weights.get("decoder.output_projection.weight")
    if projection is not None and not torch.equal(projection, embedding):
        raise ArbenchError("decoder.output_projection.weight differs from the shared embedding (ours are tied)")
    if embedding.shape[0] != len(vocab):
        raise ArbenchError(f"the embedding has {embedding.shape[0]} rows and the dictionary {len(vocab)} symbols")
    cfg = TransformerConfig(vocab_size=len(vocab), embed_dim=args["encoder_embed_dim"],
                            ffn_dim=args["encoder_ffn_embed_dim"], heads=args["encoder_attention_heads"],
                            encoder_layers=args["encoder_layers"], decoder_layers=args["decoder_layers"],
                            dropout=0.0, max_positions=args["max_source_positions"], padding_idx=vocab.pad)
    settings = {"upsample": int(float(args["upsample_scale"])), "max_graph": args["max_target_positions"]}
    model = DATransformer(cfg, **settings)
    kept = {k: v for k, v in weights.items() if k not in DROPPED}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if missing or unexpected:
        raise ArbenchError(f"{path}: tensors our DA-Transformer lacks {sorted(unexpected)}; tensors it needs that "
                           f"the checkpoint lacks {sorted(missing)}")
    return model.eval(), vocab, settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="fairseq checkpoint (.pt)")
    parser.add_argument("--dict", type=Path, required=True, help="fairseq target dictionary (dict.txt)")
    parser.add_argument("--langpair", required=True, help="e.g. en-de")
    parser.add_argument("--output", type=Path, required=True, help="ARBench checkpoint (.safetensors)")
    args = parser.parse_args(argv)
    model, vocab, settings = import_dat(args.input, args.dict)
    save_checkpoint(model, args.output, "dat", model.cfg, vocab, args.langpair,
                    {"source": f"fairseq checkpoint {args.input.name}", "distilled": "unknown"}, settings)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
