"""``interprettensor explain-text``: the command's options; the command itself is
:mod:`interprettensor.apps.explain_text`."""

from __future__ import annotations

import argparse
from typing import Any

from .options import CLIError, _positive_int, prepare_out_dir

__all__ = ["add_parser", "cmd_explain_text"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``explain-text`` subcommand's arguments (built without importing TensorFlow)."""
    x = sub.add_parser(
        "explain-text", parents=[common], help="explain a text model (transformer) on token ids or texts",
        usage="interprettensor explain-text MODEL [INPUTS ...] [--text TEXT ...] [options]",
        description="Explain a saved text model (.keras, or a keras_hub preset folder written by save_to_preset, "
                    "or a Hugging Face checkpoint folder that keras_hub converts) with LRP, one relevance per token. "
                    "A model whose "
                    "input is integer token ids takes .npy arrays (N, T) and .txt files with one sentence per "
                    "line as space-separated ids (padded at the end with id 0 to the model's sequence length "
                    "or the longest sentence; trailing 0s are padding); --vocab names the tokens. A keras_hub "
                    "task saved with its preprocessor (e.g. BertTextClassifier, GPT2CausalLM) takes .txt files "
                    "with one text per line, or --text. For a language model's output (batch, sequence, "
                    "vocabulary) the next-token logit at --position is explained (default: at each "
                    "sentence's last token). Writes OUT/relevances.npz (token_ids, relevance, mask, targets, "
                    "predictions, scores, names; positions, texts), OUT/explanations.html and "
                    "OUT/explanations.png. With --generate N (causal language models) N tokens are generated "
                    "after each sentence and each one's logit explained over the tokens before it: "
                    "OUT/generation.npz, OUT/generation.html, OUT/generation_NAME.png.")
    x.add_argument("model", help="a saved Keras model (.keras) or a keras_hub preset / Hugging Face checkpoint folder")
    x.add_argument("inputs", nargs="*", metavar="INPUTS",
                   help=".npy arrays or .txt files of token ids; for a keras_hub model with a preprocessor, .txt "
                        "files with one text per line")
    x.add_argument("--text", action="append", default=None, metavar="TEXT",
                   help="a text to explain (keras_hub models with a preprocessor); may be repeated")
    x.add_argument("--rule", default="attnlrp", help="rule or preset: attnlrp, cp_lrp, epsilon, ... "
                                                     "(default: %(default)s)")
    x.add_argument("--epsilon", type=float, default=None, help="epsilon of the rule (default: the rule's)")
    x.add_argument("--target", type=int, default=None,
                   help="class to explain, or the token id for a language model (default: the predicted one)")
    x.add_argument("--position", type=int, default=None,
                   help="for outputs (batch, sequence, vocabulary): the position whose next-token logit is "
                        "explained, negative from the end (default: each sentence's last token)")
    x.add_argument("--generate", type=_positive_int, default=None, metavar="N",
                   help="causal language models: generate N tokens (greedily) after each sentence and explain "
                        "each generated token's logit (a relevance matrix per sentence)")
    x.add_argument("--vocab", default=None, metavar="FILE",
                   help="token strings for token-id inputs: one token per line, line i = id i "
                        "(default: show the ids)")
    x.add_argument("--max-length", type=_positive_int, default=None, metavar="L",
                   help="sequence length: ids are padded to it (when the model's is not fixed); a keras_hub "
                        "preprocessor pads or cuts texts to it (default: the model's or the preprocessor's)")
    x.add_argument("--out", default="explanations", help="output folder (default: %(default)s)")
    x.add_argument("--batch-size", type=_positive_int, default=32,
                   help="sentences per LRP pass (default: %(default)s)")
    x.add_argument("--cmap", default="bwr", help="colour map: bwr, coldnhot or a matplotlib name "
                                                 "(default: %(default)s)")
    x.set_defaults(func=cmd_explain_text)


def cmd_explain_text(args: argparse.Namespace) -> int:
    """``interprettensor explain-text``: :func:`interprettensor.apps.explain_text.run`."""
    from ..explain_text import TextCommandError, run

    try:
        return run(args, prepare_out_dir)
    except TextCommandError as e:
        raise CLIError(str(e)) from None
