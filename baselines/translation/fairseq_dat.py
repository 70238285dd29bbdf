"""Import a fairseq DA-Transformer checkpoint (thu-coai/DA-Transformer@245a90f, `glat_decomposed_link*`) as an
ARBench `dat` checkpoint, without unpickling anything outside an allow-list.

fairseq checkpoints are pickles (`torch.save` of a dict with `args` (argparse.Namespace, older fairseq) or
`cfg` (a dict whose `model` is a Namespace for legacy architectures), `model` (the state dict),
`optimizer_history`, `extra_state` ...). They are read with `torch.load(weights_only=True)` and this module's
explicit allow-list (`SAFE_GLOBALS`: argparse.Namespace and numpy scalars); anything else (a LightSeq object,
an omegaconf node, a class from an arbitrary module) is refused before it is built, with a command that strips
the checkpoint to its weights and arguments where it is trusted.

Our modules (`layers.py`, `dag.py`) implement these of upstream's settings: shared embeddings; pre-norm or
post-norm (fairseq's default) layers; ReLU or GELU; sinusoidal or learned positions; the decoder's segment
embedding (`--segment-embedding`); links from `feature:position` with unbounded transitions (-1, or a bound no
graph reaches, such as upstream's 99999); the graph size from `upsample_base` `source`, `source_old` or
`predict` (upstream's formulas, with `</s>` appended to the source as fairseq's data has it, and the
`decode_upsample_scale`, else a fixed `upsample_scale`). The dictionary is either ours (six special symbols
first) or fairseq's layout (`<s> <pad> </s> <unk>`, dict.txt, then `--seg-tokens` segment symbols `[P0]` ...).
A checkpoint with any other setting is refused with the list of what does not fit, rather than loaded into the
wrong network.

PDAT (the released pre-trained DA-Transformer, `examples/DA-Transformer/pretrain.sh`) is `model.bin`, which
upstream's `--load-pretrained-model` reads either as a bare state dict (`extract_model_state.py` output, no
arguments) or as a full checkpoint (not verifiable offline), with BERT-uncased word pieces; `--preset pdat`
supplies the arguments of a bare state dict (`PDAT_ARGS`); a full checkpoint's own arguments take precedence.
A LightSeq state dict (`encoder.layers.0.para`) is refused with upstream's conversion.

    python -m baselines.translation.fairseq_dat --input checkpoint.pt --dict dict.txt --langpair en-de \\
        --output dat-imported.safetensors
    python -m baselines.translation.fairseq_dat --preset pdat --input model.bin --dict dict.txt \\
        --langpair en-en --output pdat.safetensors
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.translation.checkpoint import save_checkpoint
from baselines.translation.dag import DAT_OPTION_DEFAULTS, DATransformer
from baselines.translation.layers import TransformerConfig
from baselines.translation.vocab import FAIRSEQ_SPECIALS, SPECIALS, FairseqDictionary, Vocabulary
from harness.errors import ArbenchError
from harness.weights import WeightSpec, register_weights

#: The globals a fairseq checkpoint of this model may reference besides torch's own weights-only set.
SAFE_GLOBALS = [argparse.Namespace, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)),
                type(np.dtype(np.int64)), np._core.multiarray.scalar]  # numpy scalars in fairseq's meter states
LIGHTSEQ_CONVERSION = ("python3 ./fs_plugins/scripts/convert_ls_to_fs.py --input ls.pt --output fs.pt  "
                       "(from thu-coai/DA-Transformer)")
STRIP_COMMAND = ("python -c \"import torch; s = torch.load('IN.pt', map_location='cpu', weights_only=False); "
                 "a = s.get('args') or s['cfg']['model']; torch.save({'args': a, 'model': s['model']}, "
                 "'OUT.pt')\"")
LIGHTSEQ_STATE_CONVERSION = (
    "python -c \"import sys, torch; sys.path.insert(0, 'fs_plugins/scripts'); from _convert_utils import "
    "convert_state_from_ls_to_fs as c; torch.save(c(torch.load('ls.bin', map_location='cpu'), 768, 3072, 6), "
    "'fs.bin')\"  (in a thu-coai/DA-Transformer checkout; 768, 3072, 6: decoder dim, FFN dim, layers)")
#: Entries of the state dict that our modules do not hold: fairseq's version counters and sinusoidal
#: position buffers, the length predictor where the graph size does not use it, the output projection
#: (checked to be the shared embedding).
DROPPED = ("encoder.version", "decoder.version", "encoder.embed_positions._float_tensor",
           "decoder.embed_positions._float_tensor", "decoder.output_projection.weight")
#: PDAT's model arguments: `examples/DA-Transformer/pretrain.sh` with `glat_decomposed_link_pretrain`'s
#: defaults (6+6 layers of 768, FFN 3072, 12 heads, post-norm) and the task's `--seg-tokens 32`. Its length
#: predictor was trained with `--length-loss-factor 0`, so upstream's fine-tuning scripts (squad.sh ...) use
#: `--upsample-base predict` only after fine-tuning trains it; `decode_upsample_scale` is pretrain.sh's 6.0.
PDAT_ARGS = {
    "arch": "glat_decomposed_link_pretrain", "encoder_layers": 6, "decoder_layers": 6, "encoder_embed_dim": 768,
    "decoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "decoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "decoder_attention_heads": 12, "encoder_normalize_before": False,
    "decoder_normalize_before": False, "encoder_learned_pos": True, "decoder_learned_pos": True,
    "activation_fn": "gelu", "share_all_embeddings": True, "links_feature": "feature:position",
    "segment_embedding": True, "seg_tokens": 32, "max_source_positions": 512, "max_target_positions": 1024,
    "max_transition_length": 99999, "upsample_base": "predict", "upsample_scale": "4~8",
    "decode_upsample_scale": 6.0, "layernorm_embedding": False, "no_scale_embedding": False,
}
PRESETS = {"pdat": PDAT_ARGS}
PDAT_LICENSE = ("Apache-2.0 (thu-coai/DA-Transformer's licence; the README states no separate terms for the "
                "checkpoint)")
# The README publishes no checksums: sha256=None, so the digest of the file used goes into the signature.
PDAT_WEIGHTS = register_weights(WeightSpec(
    "pdat", "pdat_model.bin", "https://cloud.tsinghua.edu.cn/f/b048a7eddd204e2098a7/?dl=1", None, PDAT_LICENSE,
    "PDAT: DA-Transformer pre-trained on Wikipedia + BookCorpus (uncased, 127M, 500k steps; bare state dict)"))
PDAT_VOCAB = register_weights(WeightSpec(
    "pdat-vocab", "pdat_dict.txt", "https://cloud.tsinghua.edu.cn/f/32ab06d8f7c546569c87/?dl=1", None,
    PDAT_LICENSE, "PDAT's fairseq dictionary (BERT-base-uncased word pieces)"))
TOKENIZERS = ("words", "bert-uncased")


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
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return {"model": state}  # a bare state dict (upstream's extract_model_state.py: PDAT's model.bin)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or (
            state.get("args") is None and not isinstance(state.get("cfg"), dict)):
        raise ArbenchError(f"{path} is not a fairseq checkpoint: expected a dict with 'model' (the state dict) and "
                           f"'args' or 'cfg' (the training arguments), or a bare state dict of tensors")
    return state


def _reader_error(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    after = [lines[i + 1] for i, line in enumerate(lines[:-1]) if "WeightsUnpickler error" in line]
    return after[0] if after else lines[-1]


def model_arguments(state: dict[str, Any], preset: str | None = None) -> dict[str, Any]:
    """The checkpoint's model arguments (`args`, or `cfg.model` plus `cfg.task`'s `seg_tokens`); for a bare state
    dict those of `preset` (which a checkpoint with its own arguments does not need: its own are used)."""
    if "args" not in state and "cfg" not in state:
        if preset is None:
            raise ArbenchError(f"the checkpoint is a bare state dict without its training arguments; name them with "
                               f"--preset ({', '.join(PRESETS)}) or import the full fairseq checkpoint")
        if preset not in PRESETS:
            raise ArbenchError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return dict(PRESETS[preset])
    args, task = state.get("args"), None
    if args is None:
        args, task = state["cfg"].get("model"), state["cfg"].get("task")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict):
        raise ArbenchError("the checkpoint's 'args' / 'cfg.model' is neither a Namespace nor a dict")
    task = vars(task) if isinstance(task, argparse.Namespace) else task if isinstance(task, dict) else {}
    return {**{k: task[k] for k in ("seg_tokens", "decode_upsample_scale") if k in task}, **dict(args)}


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_arguments(args: dict[str, Any]) -> None:
    """Refuse (listing every mismatch) what our modules do not implement."""
    arch = str(args.get("arch") or args.get("_name") or "")
    if arch.startswith("ls_"):
        raise ArbenchError(f"the checkpoint is a LightSeq model ({arch}: fused layer parameters); convert it to "
                           f"fairseq's layout first: {LIGHTSEQ_CONVERSION}")
    if "decomposed_link" not in arch:
        raise ArbenchError(f"the checkpoint's architecture {arch!r} is not a DA-Transformer (glat_decomposed_link*)")
    wanted = {"share_all_embeddings": True, "links_feature": "feature:position", "layernorm_embedding": False,
              "no_scale_embedding": False, "no_token_positional_embeddings": False, "pred_length_offset": False}
    problems = [f"{k}={args.get(k)!r} (ours: {v!r})" for k, v in wanted.items() if args.get(k, v) != v]
    for enc, dec in (("encoder_embed_dim", "decoder_embed_dim"), ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim"),
                     ("encoder_attention_heads", "decoder_attention_heads"),
                     ("encoder_normalize_before", "decoder_normalize_before"),
                     ("encoder_learned_pos", "decoder_learned_pos")):
        if args.get(enc) != args.get(dec):
            problems.append(f"{enc}={args.get(enc)} != {dec}={args.get(dec)} (ours: equal)")
    if args.get("activation_fn", "relu") not in ("relu", "gelu"):
        problems.append(f"activation_fn={args.get('activation_fn')!r} (ours: 'relu' or 'gelu')")
    transition = args.get("max_transition_length", -1)
    if transition != -1 and (not isinstance(transition, int) or transition < args.get("max_target_positions", 0)):
        problems.append(f"max_transition_length={transition!r} (ours: -1, unbounded, or at least "
                        f"max_target_positions)")
    base = args.get("upsample_base", "source")
    scale = args.get("upsample_scale")
    if base in ("source", "source_old", "predict"):
        if _number(args.get("decode_upsample_scale")) is None and _number(scale) is None:
            problems.append(f"upsample_base={base!r} with upsample_scale={scale!r} and no decode_upsample_scale "
                            f"(give --decode-upsample-scale)")
    else:
        problems.append(f"upsample_base={base!r} (ours: 'source', 'source_old' or 'predict')")
    if problems:
        raise ArbenchError("the checkpoint's model settings do not fit ARBench's DA-Transformer modules: "
                           + "; ".join(problems))


def read_dictionary(path: Path, rows: int, seg_tokens: int | None = None) -> Vocabulary:
    """A fairseq dict.txt (`word count` per line; fairseq puts <s> <pad> </s> <unk> before it): our layout
    where it holds our <mask> <blank> first and fills the embedding, else fairseq's (`FairseqDictionary`) with
    `seg_tokens` segment symbols after it (default: the embedding rows it leaves)."""
    if not Path(path).is_file():
        raise ArbenchError(f"no dictionary at {path}")
    words = [line.rsplit(" ", 1)[0] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    ours = list(FAIRSEQ_SPECIALS) + words
    if tuple(ours[:len(SPECIALS)]) == SPECIALS and len(ours) == rows and not seg_tokens:
        return Vocabulary(ours)
    seg = rows - len(ours) if seg_tokens is None else seg_tokens
    if seg < 0 or len(ours) + seg != rows:
        raise ArbenchError(f"the embedding has {rows} rows, but {path} gives {len(ours)} symbols (with fairseq's "
                           f"four specials) and {seg_tokens} segment symbols: it is not this model's dictionary")
    try:
        return FairseqDictionary.from_dict_txt(words, seg)
    except ValueError as exc:
        raise ArbenchError(f"{path}: {exc}") from None


def _weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    weights = dict(state["model"])
    if "encoder.layers.0.para" in weights:
        raise ArbenchError(f"the state dict is in LightSeq's layout (encoder.layers.0.para); convert it to "
                           f"fairseq's first: {LIGHTSEQ_STATE_CONVERSION}")
    for name in [n for n in weights if n.startswith("decoder.link_predictor.")]:  # as upstream's build_model
        weights[name.replace("decoder.link_predictor.", "decoder.")] = weights.pop(name)
    return weights


def import_dat(path: Path, dictionary: Path, preset: str | None = None, decode_upsample_scale: float | None = None
               ) -> tuple[DATransformer, Vocabulary, dict[str, Any]]:
    """Our DATransformer with the checkpoint's weights (strict: every tensor used, every shape checked), its
    vocabulary and its model settings (the `dat` checkpoint's `arbench.model`)."""
    state = read_fairseq_checkpoint(path)
    args = model_arguments(state, preset)
    if decode_upsample_scale is not None:
        args["decode_upsample_scale"] = decode_upsample_scale
    check_arguments(args)
    weights = _weights(state)
    embedding = weights.get("encoder.embed_tokens.weight")
    if embedding is None:
        raise ArbenchError(f"{path}: no encoder.embed_tokens.weight; not a DA-Transformer state dict")
    projection = weights.get("decoder.output_projection.weight")
    if projection is not None and not torch.equal(projection, embedding):
        raise ArbenchError("decoder.output_projection.weight differs from the shared embedding (ours are tied)")
    segments = 0
    if args.get("segment_embedding"):
        if "decoder.embed_seg.weight" not in weights:
            raise ArbenchError(f"{path}: segment_embedding is set but decoder.embed_seg.weight is absent")
        segments = weights["decoder.embed_seg.weight"].shape[0] - 1
    vocab = read_dictionary(dictionary, embedding.shape[0], args.get("seg_tokens"))
    padding = vocab.pad
    learned = bool(args.get("encoder_learned_pos"))
    max_source, max_target = args["max_source_positions"], args["max_target_positions"]
    if learned:  # the tables' own sizes (upstream extends or truncates them when it fine-tunes)
        max_source = weights["encoder.embed_positions.weight"].shape[0] - padding - 1
        max_target = weights["decoder.embed_positions.weight"].shape[0] - padding - 1
    cfg = TransformerConfig(vocab_size=len(vocab), embed_dim=args["encoder_embed_dim"],
                            ffn_dim=args["encoder_ffn_embed_dim"], heads=args["encoder_attention_heads"],
                            encoder_layers=args["encoder_layers"], decoder_layers=args["decoder_layers"],
                            dropout=0.0, max_positions=max_source, padding_idx=padding)
    base = args.get("upsample_base", "source")
    upsample = float(args["decode_upsample_scale"] if _number(args.get("decode_upsample_scale")) is not None
                     else args["upsample_scale"])
    options = {"learned_pos": learned, "activation": args.get("activation_fn", "relu"),
               "normalize_before": bool(args.get("encoder_normalize_before")), "segment_embedding": segments,
               "source_eos": True, "upsample_base": "upstream_source" if base == "source" else base}
    options = {k: v for k, v in options.items() if v != DAT_OPTION_DEFAULTS[k]}
    settings = {"upsample": upsample, "max_graph": max_target, **options}
    model = DATransformer(cfg, **settings)
    dropped = DROPPED + (() if base == "predict" else ("decoder.embed_length.weight",))
    kept = {k: v for k, v in weights.items() if k not in dropped}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if missing or unexpected:
        raise ArbenchError(f"{path}: tensors our DA-Transformer lacks {sorted(unexpected)}; tensors it needs that "
                           f"the checkpoint lacks {sorted(missing)}")
    return model.eval(), vocab, settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="fairseq checkpoint (.pt) or bare state dict")
    parser.add_argument("--dict", type=Path, required=True, help="fairseq target dictionary (dict.txt)")
    parser.add_argument("--langpair", required=True, help="e.g. en-de")
    parser.add_argument("--output", type=Path, required=True, help="ARBench checkpoint (.safetensors)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="arguments of a bare state dict (PDAT's model.bin)")
    parser.add_argument("--decode-upsample-scale", type=float, help="graph size scale for source_old / predict")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default=None,
                        help="how text becomes dictionary symbols: our word tokenizer, or BERT-uncased word pieces "
                             "(upstream's process_bert_uncased.py; default with --preset pdat)")
    args = parser.parse_args(argv)
    model, vocab, settings = import_dat(args.input, args.dict, args.preset, args.decode_upsample_scale)
    tokenizer = args.tokenizer or ("bert-uncased" if args.preset == "pdat" else "words")
    save_checkpoint(model, args.output, "dat", model.cfg, vocab, args.langpair,
                    {"source": f"fairseq checkpoint {args.input.name}", "distilled": "unknown",
                     "tokenizer": tokenizer}, settings)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
