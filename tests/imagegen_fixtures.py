"""Helpers shared by the image-generator tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

GENEVAL_PROMPTS = Path(__file__).parent / "data" / "geneval_evaluation_metadata.jsonl"


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere: the released architectures zero-initialise some layers (LlamaGen's output
    layer, RAR's adaLN), which would let a wrong wiring pass unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def run_geneval_counting(method: str, settings: dict, tmp_path, monkeypatch, results_dir) -> list:
    """`arbench run geneval <method>` through the real runner and GenEval's folder writer and reader, with the
    detector and CLIP (no weights here) replaced by a count of what was read; returns the samples GenEval read
    after checking that every one of the 553 prompts came back once (pass `images_per_prompt: 1` to keep it fast)."""
    from pathlib import Path

    from harness.metrics.base import MetricValue
    from harness.runner import Runner, RunOptions
    from harness.store import Store
    from tasks.geneval import METADATA, GenEval

    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    prompts = Path(__file__).parent / "data" / "geneval_evaluation_metadata.jsonl"
    (home / "weights" / METADATA.filename).write_bytes(prompts.read_bytes())
    monkeypatch.setenv("ARBENCH_HOME", str(home))
    seen = {}

    def count(self, samples, ctx):
        seen["samples"] = samples
        return [MetricValue("geneval", len(samples) / 553, True)]

    monkeypatch.setattr(GenEval, "require_assets", lambda self: None)
    monkeypatch.setattr(GenEval, "score", count)
    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"),
                    options=RunOptions(batch_size=256, shard_size=300, device="cpu", progress=False))
    result = runner.run("geneval", method, settings)
    assert [m.value for m in result.metrics] == [1.0]
    samples = seen["samples"]
    assert len({s.prompt_index for s in samples}) == 553 and len(samples) == 553
    return samples


def make_tiny_t5(folder: Path) -> None:
    """A tiny T5 encoder (d_model 32) and a word-level tokenizer, saved as transformers saves FLAN-T5-XL."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from baselines.imagegen.llamagen_t2i_methods import FLAN_T5_XL_FILES

    words = sorted({w for line in GENEVAL_PROMPTS.read_text().splitlines() for w in json.loads(line)["prompt"].split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(folder))
    torch.manual_seed(5)
    t5 = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 feed_forward_proj="gated-gelu"))
    t5.save_pretrained(str(folder), safe_serialization=True, max_shard_size="60KB")
    for name in FLAN_T5_XL_FILES:  # the file list the method names; transformers may write fewer metadata files
        if not (folder / name).exists():
            assert name == "special_tokens_map.json", f"transformers wrote no {name}: {sorted(p.name for p in folder.iterdir())}"
            (folder / name).write_text(json.dumps({"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}))
