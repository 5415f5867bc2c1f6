"""``interprettensor explain-text``: explain a text model (a transformer) on token ids or texts.

Two kinds of saved models (a ``.keras`` file, or a keras_hub preset folder written by
``save_to_preset`` or a Hugging Face checkpoint folder that keras_hub converts):

* a model whose input is integer token ids (``(batch, sequence)``; a keras_hub backbone's
  ``padding_mask``/``segment_ids`` inputs are filled from the ids): INPUTS are ``.npy`` arrays of ids
  ``(N, T)`` and ``.txt`` files with one sentence per line as space-separated integer ids; sentences
  are padded at the end with id 0 to the model's sequence length (or ``--max-length``, or the
  longest sentence), and trailing 0s count as padding; ``--vocab FILE`` (one token per line, line i
  = id i) names the tokens, else they are shown as their ids;
* a keras_hub task saved with its preprocessor (``BertTextClassifier``, ``GPT2CausalLM``, ...):
  INPUTS are ``.txt`` files with one text per line, or ``--text "..."``; the preprocessor makes the
  model's inputs and its tokenizer names the tokens; padding is hidden.

For an output with a sequence axis ``(batch, sequence, vocabulary)`` (a causal language model) the
next-token logits at ``--position`` are explained, by default at each sentence's last token; with
``--generate N`` each sentence is a prompt after which N tokens are generated (greedily), each one's
logit explained over the prompt and the tokens before it (``OUT/generation.npz``,
``OUT/generation.html``, ``OUT/generation_NAME.png``).
Writes ``OUT/relevances.npz``, ``OUT/explanations.html`` and ``OUT/explanations.png`` together at the
end (temporary files and renames: an error leaves none of them behind, and older ones as they were).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Callable
from typing import Any

from ..engine.errors import InterpretTensorError

__all__ = ["TextCommandError", "run"]

NPZ, HTML, PNG = "relevances.npz", "explanations.html", "explanations.png"


class TextCommandError(InterpretTensorError):
    """An expected failure of the command (bad options, inputs that do not fit the model): the command
    line reports it as ``error: <message>`` without a traceback."""


def run(args: argparse.Namespace, prepare_out_dir: Callable[[str], Any]) -> int:
    """``interprettensor explain-text`` (see the module's notes); ``args`` as parsed by the command
    line, ``prepare_out_dir(path)`` creates the output folder and checks that it can be written."""
    import numpy as np

    import interprettensor as it

    from ..io.inputs import InputError
    from ..io.render import get_cmap
    from ..io.text_inputs import load_text_model, read_vocab, text_model

    params = {} if args.epsilon is None else {"epsilon": args.epsilon}
    try:
        it.get_composite(args.rule, **params)  # unknown rules and parameters fail here, before any work
    except (ValueError, TypeError) as e:
        raise TextCommandError(f"--rule {args.rule}: {e}") from None
    get_cmap(args.cmap)
    if args.target is not None and args.target < 0:
        raise TextCommandError(f"--target must be a class (or token id) >= 0, got {args.target}")
    texts_given = list(args.text or [])
    if not args.inputs and not texts_given:
        raise TextCommandError("no inputs: give .txt or .npy files after the model (or --text \"...\" for a "
                               "keras_hub model saved with its preprocessor)")
    for p in args.inputs:
        if not os.path.exists(p):
            raise InputError(f"input {p!r} does not exist")
    vocab = read_vocab(args.vocab) if args.vocab else None
    model = load_text_model(args.model)
    tm = text_model(model)
    out_shape = tm.output_shape
    seq_output = out_shape is not None and len(out_shape) == 3
    generate = getattr(args, "generate", None)
    if generate is not None:
        if out_shape is not None and not seq_output:
            raise TextCommandError(f"--generate needs a causal language model (output: batch, sequence, vocabulary); "
                                   f"model {model.name!r} gives (batch, {', '.join(map(str, out_shape[1:]))})")
        if tm.length is not None:
            raise TextCommandError(f"--generate: model {model.name!r} takes sequences of exactly {tm.length} tokens, "
                                   f"so it cannot read a prompt grown by generated tokens")
        for flag, value in (("--position", args.position), ("--target", args.target)):
            if value is not None:
                raise TextCommandError(f"{flag} and --generate exclude each other: --generate explains each "
                                       f"generated token at the position before it")
    if args.position is not None and out_shape is not None and len(out_shape) == 2:
        raise TextCommandError(f"--position selects a position of a sequence output (batch, sequence, vocabulary), "
                               f"such as a language model's next-token logits; model {model.name!r} gives one "
                               f"output per sentence (batch, {', '.join(map(str, out_shape[1:]))}) (a classifier): "
                               f"leave --position out")
    n_out = out_shape[-1] if out_shape is not None and isinstance(out_shape[-1], int) else None
    if args.target is not None and n_out is not None and args.target >= n_out:
        what = "token ids" if seq_output else "classes"
        raise TextCommandError(f"--target {args.target} is out of range: model {model.name!r} has {n_out} {what} "
                               f"(0..{n_out - 1})")

    texts: list[str] | None = None
    if tm.preprocessor is not None:
        if vocab is not None:
            raise TextCommandError("--vocab: this model has a keras_hub preprocessor whose tokenizer names the "
                                   "tokens; leave --vocab out")
        names, texts, x, ids, real = _from_texts(args, model, tm, texts_given)
        tokenizer: Any = tm.preprocessor.tokenizer
    else:
        if texts_given:
            raise TextCommandError(f"--text needs a keras_hub model saved with its preprocessor (which turns text "
                                   f"into token ids); model {model.name!r} takes token ids: give .npy arrays or .txt "
                                   f"files of integer ids")
        names, x, ids, real = _from_ids(args, tm, vocab)
        tokenizer = vocab

    n = len(names)
    if generate is not None:
        return _generation(args, model, ids, real, names, texts, tokenizer, params, prepare_out_dir)
    positions = None
    if args.position is not None:
        positions = np.full(n, args.position, np.int64)
    elif seq_output:  # a language model: the next token after each sentence's last token
        positions = np.array([int(np.flatnonzero(r)[-1]) if r.any() else 0 for r in real], np.int64)
    target = None if args.target is None else np.full(n, args.target, np.int64)

    out_dir = args.out
    existed = os.path.isdir(out_dir)
    prepare_out_dir(out_dir)
    try:
        R, logits, positions = _explain(args, model, tm, x, target, positions, params)
        if positions is not None:
            logits = logits[np.arange(n), positions]
        logits = logits.reshape(n, -1)
        predictions = logits.argmax(-1).astype(np.int64)
        targets = predictions if target is None else target
        scores = logits[np.arange(n), targets].astype(np.float32)
        token_strings = _token_strings(ids, tokenizer)
        arrays: dict[str, Any] = {"token_ids": ids, "relevance": R, "mask": real, "targets": targets,
                                  "predictions": predictions, "scores": scores, "names": np.array(names)}
        if positions is not None:
            arrays["positions"] = positions
        if texts is not None:
            arrays["texts"] = np.array(texts)
        sentences = []
        for i in range(n):
            what = _explained(targets[i], predictions[i], scores[i], seq_output,
                              None if positions is None else int(positions[i]), token_strings[i], tokenizer)
            sentences.append((token_strings[i], R[i], f"{names[i]}: {what}", real[i]))
            if not args.quiet:
                shown = f' "{_short(texts[i])}"' if texts is not None else ""
                print(f"{names[i]}{shown}: {what}; most relevant: {_top(token_strings[i], R[i], real[i])}", flush=True)
        _write_outputs(out_dir, arrays, sentences, args)
    except BaseException:
        if not existed:  # a folder this run made, still empty: remove it
            try:
                os.rmdir(out_dir)
            except OSError:
                pass
        raise
    print(f"explained {n} sentence(s) with {args.rule}: {os.path.join(out_dir, HTML)}, "
          f"{os.path.join(out_dir, PNG)}, {os.path.join(out_dir, NPZ)}")
    return 0


# ---------------------------------------------------------------------------------------------- inputs
def _from_ids(args: argparse.Namespace, tm: Any, vocab: list[str] | None) -> tuple:
    """Token ids from the files: (names, model input, ids, real tokens)."""
    import numpy as np

    from ..io.inputs import InputError
    from ..io.text_inputs import read_id_sentences

    if args.max_length is not None and tm.length is not None and args.max_length != tm.length:
        raise TextCommandError(f"--max-length {args.max_length}: the model takes sequences of exactly {tm.length} "
                               f"tokens (leave --max-length out)")
    s = read_id_sentences(args.inputs, tm.length, args.max_length)
    if tm.vocab_size is not None:
        bad = np.argwhere(s.ids >= tm.vocab_size)
        if len(bad):
            i, j = (int(v) for v in bad[0])
            raise InputError(f"{s.where[i]}: token id {int(s.ids[i, j])} (position {j}) is outside the model's "
                             f"vocabulary: its embedding takes ids 0..{tm.vocab_size - 1}")
        if vocab is not None and len(vocab) != tm.vocab_size and not args.quiet:
            print(f"note: --vocab {args.vocab!r} has {len(vocab)} tokens, the model's embedding "
                  f"{tm.vocab_size}", file=sys.stderr, flush=True)
    return s.names, tm.inputs(s.ids, s.real), s.ids, s.real


def _from_texts(args: argparse.Namespace, model: Any, tm: Any, texts_given: list[str]) -> tuple:
    """Texts through the model's preprocessor: (names, texts, model input, ids, real tokens)."""
    import numpy as np

    from ..io.inputs import InputError
    from ..io.text_inputs import read_texts

    if tm.ids_key != "token_ids":
        raise InputError(f"model {model.name!r} takes the inputs {tm.names}; explain-text explains keras_hub "
                         f"models that take 'token_ids' (text classifiers, causal language models)")
    items = read_texts(args.inputs) + [(f"text_{k}", t) for k, t in enumerate(texts_given, 1)]
    names, texts = [a for a, _ in items], [b for _, b in items]
    pre = tm.preprocessor
    limit = getattr(getattr(model, "backbone", None), "max_sequence_length", None)
    if args.max_length is not None and isinstance(limit, int) and args.max_length > limit:
        raise TextCommandError(f"--max-length {args.max_length} is longer than the model's position embedding "
                               f"allows ({limit} tokens)")
    try:
        if hasattr(pre, "generate_preprocess"):  # causal LMs: the prompt, without an end token or shifted labels
            x = pre.generate_preprocess(texts, sequence_length=args.max_length)
        else:
            if args.max_length is not None:
                if not hasattr(pre, "sequence_length"):
                    raise TextCommandError(f"--max-length: the preprocessor {type(pre).__name__} has no sequence "
                                           f"length to set")
                pre.sequence_length = args.max_length
            x = pre(texts)
    except TextCommandError:
        raise
    except Exception as e:  # noqa: BLE001 - preprocessors raise many kinds
        raise InputError(f"the model's preprocessor ({type(pre).__name__}) failed on the texts: "
                         f"{type(e).__name__}: {_first_line(e)[:300]}") from None
    if isinstance(x, tuple):  # (x, y, sample_weight)
        x = x[0]
    if not isinstance(x, dict) or "token_ids" not in x:
        raise InputError(f"the model's preprocessor ({type(pre).__name__}) gave "
                         f"{type(x).__name__}, not a dict with 'token_ids'")
    missing = [k for k in tm.names if k not in x]
    if missing:
        raise InputError(f"the model's preprocessor ({type(pre).__name__}) gave {sorted(x)}, but the model also "
                         f"takes {missing}")
    x = {k: np.asarray(x[k]) for k in tm.names}
    ids = x["token_ids"].astype(np.int64)
    real = x["padding_mask"].astype(bool) if "padding_mask" in x else np.ones(ids.shape, bool)
    full = [names[i] for i in range(len(names)) if real[i].all()]
    if full and not args.quiet:
        print(f"note: {', '.join(full[:5])}{' ...' if len(full) > 5 else ''} fill(s) all {ids.shape[1]} positions "
              f"and may have been cut short (--max-length sets the length)", file=sys.stderr, flush=True)
    return names, texts, x, ids, real


# ---------------------------------------------------------------------------------------------- explain
def _explain(args: argparse.Namespace, model: Any, tm: Any, x: Any, target: Any, positions: Any,
             params: dict) -> tuple:
    """Relevance of the token ids ``(N, T)`` float32, the explained output, and the positions (resolved
    from the end where negative)."""
    import numpy as np

    import interprettensor as it

    from ..engine import backend
    from ..engine.errors import ExplainError

    explainer = it.Explainer(model, args.rule, **params)
    try:
        R, logits = explainer(x, target, position=positions, return_output=True, batch_size=args.batch_size)
    except ExplainError as e:
        msg = str(e)
        for old, new in (("position=", "--position"), ("position must be", "--position must be"),
                         ("position out of range", "--position out of range"), ("target must be", "--target must be"),
                         ("target out of range", "--target out of range")):
            if msg.startswith(old) or f" {old}" in msg:
                msg = msg.replace(old, new, 1)
        raise TextCommandError(msg) from None
    except backend.RUNTIME_ERRORS as e:  # the explainer checks ids on the host; a kernel's own check, in case
        found = re.search(r"indices\[[^\]]*\] = -?\d+ is not in \[\d+, \d+\)", backend.error_message(e) or "")
        if found:
            raise TextCommandError(f"a token id is outside the vocabulary of an embedding ({found.group(0)}): check "
                                   f"the ids against the model's vocabulary") from None
        raise
    R = np.asarray(tm.ids_relevance(R), np.float32)
    logits = np.asarray(logits, np.float32)
    if positions is not None:
        positions = np.where(positions < 0, positions + logits.shape[1], positions).astype(np.int64)
    return R, logits, positions


# ---------------------------------------------------------------------------------------------- generation
GEN_NPZ, GEN_HTML = "generation.npz", "generation.html"


def _generation(args: argparse.Namespace, model: Any, ids: Any, real: Any, names: list, texts: Any,
                tokenizer: Any, params: dict, prepare_out_dir: Callable[[str], Any]) -> int:
    """``--generate N``: each sentence is a prompt; N tokens are generated greedily and each one's logit
    explained over the prompt and the tokens before it (:func:`interprettensor.explain_generation`).
    Writes OUT/generation.npz (per prompt NAME: NAME/token_ids, NAME/prompt_length, NAME/relevance,
    NAME/logits), OUT/generation.html (one line per generated token) and OUT/generation_NAME.png (the
    relevance matrix)."""
    import numpy as np

    import interprettensor as it

    from ..engine.errors import ExplainError
    from ..io import render_text

    explainer = it.Explainer(model, args.rule, **params)
    out_dir = args.out
    existed = os.path.isdir(out_dir)
    prepare_out_dir(out_dir)
    arrays: dict[str, Any] = {}
    sentences: list = []
    pngs: list = []
    try:
        for i, name in enumerate(names):
            prompt = np.asarray(ids[i])[np.asarray(real[i], bool)]
            if not prompt.size:
                raise TextCommandError(f"{name}: the prompt has no tokens")
            try:
                g = it.explain_generation(model, prompt.astype("int32"), args.generate, explainer=explainer,
                                          batch_size=args.batch_size)
            except ExplainError as e:
                raise TextCommandError(f"{name}: {e}") from None
            tokens = _token_strings(g.token_ids[None], tokenizer)[0]
            for key, value in (("token_ids", g.token_ids), ("prompt_length", np.int64(g.prompt_length)),
                               ("relevance", g.relevance.astype(np.float32)), ("logits", g.logits)):
                arrays[f"{name}/{key}"] = value
            for tokens_k, R_k, title in g.sentences(tokens):
                sentences.append((tokens_k, R_k, f"{name}: {title}"))
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            pngs.append((os.path.join(out_dir, f"generation_{safe}.png"), g.relevance, tokens, g.prompt_length, name))
            if not args.quiet:
                shown = f' "{_short(texts[i])}"' if texts is not None else ""
                print(f"{name}{shown}: generated {len(g.generated)} token(s): {tokens[g.prompt_length:]}", flush=True)
        with open(os.path.join(out_dir, GEN_NPZ), "wb") as f:
            np.savez(f, **arrays)
        render_text.save_html(os.path.join(out_dir, GEN_HTML), sentences, cmap=args.cmap,
                              title=f"Relevance of each generated token ({args.rule})")
        for path, R, tokens, P, name in pngs:
            render_text.save_matrix_png(path, R, tokens, P, cmap=args.cmap, title=name)
    except BaseException:
        if not existed and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    print(f"explained {len(names)} generation(s) with {args.rule}: {os.path.join(out_dir, GEN_HTML)}, "
          f"{os.path.join(out_dir, GEN_NPZ)}, {', '.join(p[0] for p in pngs)}")
    return 0


# ---------------------------------------------------------------------------------------------- outputs
def _token_strings(ids: Any, tokenizer: Any) -> list[list[str]]:
    from ..io.render_text import tokens_from_ids

    if tokenizer is None:
        return [[str(int(i)) for i in row] for row in ids]
    return tokens_from_ids(ids, tokenizer)


def _token_name(token_id: int, tokenizer: Any) -> str:
    if tokenizer is None:
        return str(int(token_id))
    return repr(_token_strings([[int(token_id)]], tokenizer)[0][0])


def _explained(target: int, prediction: int, score: float, seq_output: bool, position: int | None,
               tokens: list[str], tokenizer: Any) -> str:
    if position is not None and seq_output:
        after = tokens[position] if 0 <= position < len(tokens) else "?"
        what = f"next token {_token_name(target, tokenizer)} (id {target}, logit {score:.4g}) after position " \
               f"{position} ({after!r})"
        return what if target == prediction else f"{what}; predicted {_token_name(prediction, tokenizer)}"
    what = f"class {target} (logit {score:.4g})"
    return what if target == prediction else f"{what}; predicted class {prediction}"


def _top(tokens: list[str], R: Any, real: Any, k: int = 3) -> str:
    import numpy as np

    shown = np.flatnonzero(real)
    order = shown[np.argsort(-np.asarray(R)[shown], kind="stable")][:k]
    return ", ".join(f"{tokens[i]} ({R[i]:+.3g})" for i in order) or "(no tokens)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _write_outputs(out: str, arrays: dict, sentences: list, args: argparse.Namespace) -> None:
    """relevances.npz, explanations.html and explanations.png, each written to a temporary file first;
    renamed together once all three are complete."""
    import numpy as np

    from ..io import render_text

    final = [os.path.join(out, name) for name in (NPZ, HTML, PNG)]
    tmps = [os.path.join(out, f".{os.path.basename(p)}.{secrets.token_hex(6)}.tmp") for p in final]
    try:
        with open(tmps[0], "wb") as f:
            np.savez(f, **arrays)
        title = f"Relevance of tokens ({args.rule})"
        render_text.save_html(tmps[1], sentences, cmap=args.cmap, title=title)
        render_text.save_png(tmps[2], sentences, cmap=args.cmap)
        for tmp, path in zip(tmps, final):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
