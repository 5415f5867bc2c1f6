"""LXT's side of ``bench_transformer.py``, run inside LXT's own virtual environment (PyTorch and
``transformers``, no Keras): a ``transformers`` BertForSequenceClassification of the given size with
random weights (built from a config; nothing is downloaded), on random token ids of the given batch and
sequence length, all positions attended; prints one JSON line with the best times (seconds) of

* ``gradient_x_input``: the gradient of the predicted logit with respect to the token embeddings'
  output, times that output, summed over the hidden axis (the unpatched model; no parameter requires a
  gradient, so no weight gradient is computed), and
* ``attnlrp``: LXT's AttnLRP in its efficient mode (``lxt.efficient.monkey_patch`` on
  ``transformers``' BERT module: the same input x gradient, through the patched model),

timed in turns (``REPEATS`` each, after two warm-up calls each, best kept; wall clock, and the process's
CPU time under ``NAME_cpu``), with the versions and the number of threads PyTorch uses. LXT's patch of ``torch.nn.LayerNorm`` and ``torch.nn.Dropout`` is
global; it is swapped in for LXT's calls and out for the gradient's (checked: the gradient after the
swap equals the gradient taken before LXT was imported).

Usage (by bench_transformer.py)::

    python lxt_side.py LAYERS HIDDEN HEADS INTERMEDIATE SEQ BATCH REPEATS
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types

import torch


def _without_torchvision() -> None:
    """LXT's package imports its torchvision ViT patch when it is imported; where torchvision is not
    installed (CPU-only PyTorch wheels have no matching torchvision here), that one module is replaced by
    an empty stand-in. BERT's patch does not use it."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    stand_in = types.ModuleType("lxt.efficient.models.vit_torch")
    stand_in.vision_transformer = types.ModuleType("torchvision.models.vision_transformer (not installed)")
    stand_in.cp_LRP = {}
    sys.modules["lxt.efficient.models.vit_torch"] = stand_in


def relevance_fn(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor):
    """Input x gradient at the token embeddings' output for the predicted class, per token."""
    embed = model.bert.embeddings.word_embeddings

    def run() -> torch.Tensor:
        emb = embed(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, attention_mask=mask, token_type_ids=segments).logits
        sel = logits.gather(1, logits.argmax(-1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(sel, emb)
        return (emb * grad).sum(-1)

    return run


def main() -> None:
    layers, hidden, heads, intermediate, seq, batch, repeats = (int(a) for a in sys.argv[1:8])
    import transformers
    from transformers import BertConfig
    from transformers.models.bert import modeling_bert

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=512, num_labels=2)
    plain = modeling_bert.BertForSequenceClassification(config).eval()
    for p in plain.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    segments = torch.zeros(batch, seq, dtype=torch.long)
    grad = relevance_fn(plain, ids, mask, segments)
    before = grad().detach()

    originals = {cls: cls.forward for cls in (torch.nn.LayerNorm, torch.nn.Dropout)}
    _without_torchvision()
    import lxt
    from lxt.efficient import monkey_patch

    monkey_patch(modeling_bert)
    patched = {cls: cls.forward for cls in originals}
    explained = modeling_bert.BertForSequenceClassification(config).eval()  # LXT's class now
    explained.load_state_dict(plain.state_dict())
    for p in explained.parameters():
        p.requires_grad_(False)
    lrp = relevance_fn(explained, ids, mask, segments)

    def use(forwards: dict):
        def swap() -> None:
            for cls, fwd in forwards.items():
                cls.forward = fwd
        return swap

    fns = {"gradient_x_input": (use(originals), grad), "attnlrp": (use(patched), lrp)}
    use(originals)()
    after = grad().detach()
    if not torch.allclose(before, after, rtol=1e-4, atol=1e-5 * float(before.abs().max())):
        sys.exit("the gradient changed when LXT was imported: its patches could not be swapped out")
    with torch.no_grad():
        use(patched)()
        same = torch.allclose(plain(ids, attention_mask=mask).logits, explained(ids, attention_mask=mask).logits,
                              rtol=1e-4, atol=1e-5)
    if not same:
        sys.exit("LXT's patched BERT computes other logits than the unpatched one")
    if torch.allclose(lrp().detach(), after, rtol=1e-3, atol=1e-4 * float(after.abs().max())):
        sys.exit("LXT's relevance equals the gradient x input: its patches are not in effect")

    times: dict = {name: [] for name in fns}
    for name, (swap, fn) in fns.items():  # warm-up
        swap()
        fn(), fn()
    for _ in range(repeats):
        for name, (swap, fn) in fns.items():
            swap()
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))
    use(originals)()
    best = {name: min(w for w, _ in t) for name, t in times.items()}
    best.update({f"{name}_cpu": min(c for _, c in t) for name, t in times.items()})
    print(json.dumps({**best, "torch": torch.__version__,
                      "transformers": transformers.__version__, "lxt": getattr(lxt, "__version__", None) or _version("lxt"),
                      "threads": torch.get_num_threads()}))


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
