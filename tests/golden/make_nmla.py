"""Golden outputs of NMLA's losses, for `baselines/translation/nmla.py`.

Upstream: ictnlp/NMLA-NAT@62c4d87df2674b668b3c41f0de9c7a4115b003ba (fairseq/criterions/nat_loss.py, MIT).
Run against a checkout (only that file is needed: `git archive HEAD fairseq/criterions/nat_loss.py | tar -x`):

    python tests/golden/make_nmla.py /path/to/NMLA-NAT

The script loads `nat_loss.py` by path and calls `compute_ctc_bigram_loss` and `compute_ctc_1gram_loss` of its
criterion class (they use no criterion state; `self` is None). Import-only stubs, none of them computes
anything upstream's functions return:

* `fairseq.metrics`: an empty module; `fairseq.criterions`: `FairseqCriterion` (an empty class) and
  `register_criterion` (returns the class unchanged);
* `fairseq.utils.fill_with_neg_inf(t)`: fairseq's own one-liner `t.float().fill_(float("-inf")).type_as(t)`;
* `torch.Tensor.cuda` returns the tensor itself: upstream moves every helper tensor to the GPU with
  `.cuda(x.get_device())`; here everything stays on the CPU.

Inputs (float32, blank = upstream's id 4, targets without padding as upstream's criterion sees them in a batch of
equal-length targets): random frame logits and targets with repeated bigrams (`a a`, which CTC merges on adjacent
frames, and bigrams occurring twice), plus "peaked" cases where the logits favour a frame sequence that emits a
reference bigram more often than the reference has it, so the clipping (min with the reference count) is active.
Outputs: both losses and their gradients with respect to the logits (log_softmax in between), from upstream's
autograd. Written to tests/golden/nmla/nmla.safetensors (a few KB).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "ictnlp/NMLA-NAT@62c4d87df2674b668b3c41f0de9c7a4115b003ba"
OUT = Path(__file__).parent / "nmla" / "nmla.safetensors"
BLANK, VOCAB = 4, 10


def _stub_fairseq() -> None:
    fairseq = types.ModuleType("fairseq")
    metrics = types.ModuleType("fairseq.metrics")
    utils = types.ModuleType("fairseq.utils")
    utils.fill_with_neg_inf = lambda t: t.float().fill_(float("-inf")).type_as(t)
    criterions = types.ModuleType("fairseq.criterions")
    criterions.FairseqCriterion = type("FairseqCriterion", (), {})
    criterions.register_criterion = lambda name: (lambda cls: cls)
    fairseq.metrics, fairseq.utils, fairseq.criterions = metrics, utils, criterions
    sys.modules.update({"fairseq": fairseq, "fairseq.metrics": metrics, "fairseq.utils": utils,
                        "fairseq.criterions": criterions})
    torch.Tensor.cuda = lambda self, *args, **kwargs: self


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(23)
    words = [0, 1, 2, 3, 5, 6, 7, 8, 9]  # every id but the blank, as upstream's vocabulary allows
    cases = {}
    # random logits; targets with a repeated bigram (a a), a bigram twice, and plain random rows
    targets = torch.tensor([[5, 5, 6, 7, 5, 6, 8], [9, 3, 9, 3, 9, 3, 2], [6, 7, 8, 8, 8, 1, 0]])
    cases["random"] = (torch.randn(3, 14, VOCAB, generator=gen) * 2, targets)
    rand_targets = torch.tensor(words)[torch.randint(len(words), (4, 5), generator=gen)]
    cases["random_b4"] = (torch.randn(4, 11, VOCAB, generator=gen) * 3, rand_targets)
    # peaked: frames favour "5 6 _ 5 6 _ 5 6 ..." so the bigram (5, 6) is expected about 4 times (reference: once)
    frames = torch.tensor([5, 6, BLANK] * 4 + [7, 7, BLANK, 7])
    logits = torch.randn(2, len(frames), VOCAB, generator=gen)
    logits[:, torch.arange(len(frames)), frames] += 6.0
    cases["peaked"] = (logits, torch.tensor([[5, 6, 7, 7, 8], [6, 5, 6, 7, 9]]))
    return cases


def main(checkout: str) -> None:
    _stub_fairseq()
    spec = importlib.util.spec_from_file_location("nmla_nat_loss", Path(checkout) / "fairseq/criterions/nat_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # upstream
    criterion = module.LabelSmoothedDualImitationCriterion
    tensors: dict[str, torch.Tensor] = {}
    for name, (logits, targets) in _cases().items():
        tensors[f"{name}.logits"] = logits
        tensors[f"{name}.targets"] = targets
        for objective, fn in (("bigram", criterion.compute_ctc_bigram_loss),
                              ("unigram", criterion.compute_ctc_1gram_loss)):
            x = logits.clone().requires_grad_(True)
            loss = fn(None, torch.log_softmax(x, dim=-1), targets.clone())
            loss.backward()
            tensors[f"{name}.{objective}.loss"] = loss.detach().reshape(1)
            tensors[f"{name}.{objective}.grad"] = x.grad
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT),
              metadata={"upstream": UPSTREAM, "script": "tests/golden/make_nmla.py", "blank": str(BLANK)})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
