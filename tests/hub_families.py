"""Tiny keras_hub models of every language and vision family, built from their constructors with random
weights (nothing is downloaded): ``FAMILIES[name]()`` -> :class:`HubCase`.

Shared by ``tests/test_hub_families.py`` and ``benchmarks/keras_hub_census.py`` (one copy of the table).
Sizes: hidden 16, 2 layers, 2-4 heads, vocabulary 50, sequences of 8, batches of 2, images of 16-32
pixels. Task models where keras_hub has one (CausalLM, TextClassifier, ImageClassifier); otherwise the
backbone with a small Dense head on a pooled output. ``bias_free`` cases are built without additive
biases anywhere (or only where the family has no switch for them: then ``bias_free`` is False)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

VOCAB, SEQ, BATCH, HIDDEN = 50, 8, 2, 16


@dataclasses.dataclass
class HubCase:
    """A built model, inputs to explain, and how to explain them."""

    model: Any
    inputs: Any
    #: the position of a language model's next-token logits to explain (None: a classifier)
    position: int | None = None
    #: the input whose relevance is checked (a dict key), or None for a single array input
    key: str | None = None
    #: no additive bias anywhere, so CP-LRP with epsilon 0 conserves: Σ R = the explained logit
    bias_free: bool = False


def _kh():
    import keras_hub

    return keras_hub


def _text(segments: bool = False, pad_last: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(5, VOCAB, (BATCH, SEQ)).astype("int32"),
         "padding_mask": np.ones((BATCH, SEQ), "int32")}
    if pad_last:
        x["padding_mask"][-1, SEQ - pad_last:] = 0
        x["token_ids"][-1, SEQ - pad_last:] = 0
    if segments:
        x["segment_ids"] = np.zeros((BATCH, SEQ), "int32")
        x["segment_ids"][:, SEQ // 2:] = 1
    return x


def _image(size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((BATCH, size, size, 3)).astype("float32")


def _lm(task: str, backbone: Any, bias_free: bool = False) -> HubCase:
    model = getattr(_kh().models, task)(backbone=backbone, preprocessor=None)
    return HubCase(model, _text(), position=-1, key="token_ids", bias_free=bias_free)


def _classifier(task: str, backbone: Any, segments: bool = False, **kw) -> HubCase:
    model = getattr(_kh().models, task)(backbone=backbone, num_classes=3, preprocessor=None, **kw)
    return HubCase(model, _text(segments=segments, pad_last=2), key="token_ids")


def _image_classifier(task: str, backbone: Any, size: int = 16, **kw) -> HubCase:
    model = getattr(_kh().models, task)(backbone=backbone, num_classes=3, preprocessor=None, **kw)
    return HubCase(model, _image(size))


def _headed(backbone: Any, inputs: Any, key: str | None, pool: str = "mean", output: str | None = None) -> HubCase:
    """A backbone without a task model of its own: a Dense head of 3 classes on its pooled output."""
    import keras

    ins = {k: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=k) for k, t in backbone.input.items()} \
        if isinstance(backbone.input, dict) else keras.Input(batch_shape=backbone.input.shape, name="images")
    out = backbone(ins)
    if output is not None:
        out = out[output]
    if pool == "mean":
        out = keras.ops.mean(out, axis=1)
    elif pool == "first":
        out = out[:, 0, :]
    out = keras.layers.Dense(3, name="head")(out)
    if isinstance(ins, dict) and not isinstance(inputs, dict):  # an image backbone that takes {"images": ...}
        (key,) = ins
        inputs = {key: inputs}
    return HubCase(keras.Model(ins, out, name=f"{backbone.name}_classifier"), inputs, key=key)


# ----------------------------------------------------------------------------- decoders (CausalLM)
_LLAMA = dict(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=HIDDEN,
              intermediate_dim=32)


def gemma(**kw) -> HubCase:
    b = _kh().models.GemmaBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                   hidden_dim=HIDDEN, intermediate_dim=32, head_dim=4, **kw)
    return _lm("GemmaCausalLM", b, bias_free=True)


def gemma2() -> HubCase:
    """Gemma with Gemma 2's configuration: logit soft-caps, sliding windows, post-norms."""
    return gemma(query_head_dim_normalize=False, use_post_ffw_norm=True, use_post_attention_norm=True,
                 attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0, use_sliding_window_attention=True,
                 sliding_window_size=4)


def gemma3() -> HubCase:
    b = _kh().models.Gemma3Backbone(vocabulary_size=VOCAB, image_size=16, num_layers=2, num_query_heads=4,
                                    num_key_value_heads=2, hidden_dim=HIDDEN, intermediate_dim=32, head_dim=4,
                                    use_post_ffw_norm=True, use_post_attention_norm=True,
                                    use_sliding_window_attention=True, sliding_window_size=4)
    return _lm("Gemma3CausalLM", b, bias_free=True)


def gemma3_vision() -> HubCase:
    kh = _kh()
    enc = kh.models.Gemma3VisionEncoder(image_size=16, patch_size=4, num_heads=2, hidden_dim=HIDDEN, num_layers=2,
                                        intermediate_dim=32, output_dim=HIDDEN, pool_size=2)
    b = kh.models.Gemma3Backbone(vocabulary_size=VOCAB, image_size=16, num_layers=2, num_query_heads=4,
                                 num_key_value_heads=2, hidden_dim=HIDDEN, intermediate_dim=32, head_dim=4,
                                 vision_encoder=enc)
    model = kh.models.Gemma3CausalLM(backbone=b, preprocessor=None)
    x = _text()
    tokens_per_image = (16 // 4 // 2) ** 2  # patches pooled 2 x 2
    x["images"] = np.random.default_rng(1).random((BATCH, 1, 16, 16, 3)).astype("float32")
    x["vision_indices"] = np.tile(np.arange(1, 1 + tokens_per_image, dtype="int32"), (BATCH, 1))
    x["vision_mask"] = np.zeros((BATCH, SEQ), "int32")
    x["vision_mask"][:, 1:1 + tokens_per_image] = 1
    return HubCase(model, x, position=-1, key="images")


def qwen2() -> HubCase:
    return _lm("Qwen2CausalLM", _kh().models.Qwen2Backbone(**_LLAMA))


def qwen3() -> HubCase:
    return _lm("Qwen3CausalLM", _kh().models.Qwen3Backbone(head_dim=4, **_LLAMA), bias_free=True)


def qwen2_moe() -> HubCase:
    b = _kh().models.QwenMoeBackbone(moe_intermediate_dim=16, shared_expert_intermediate_dim=16, num_experts=4,
                                     top_k=2, **_LLAMA)
    return _lm("QwenMoeCausalLM", b)


def qwen3_moe() -> HubCase:
    b = _kh().models.Qwen3MoeBackbone(moe_intermediate_dim=16, num_experts=4, top_k=2, head_dim=4, **_LLAMA)
    return _lm("Qwen3MoeCausalLM", b, bias_free=True)


def mistral() -> HubCase:
    return _lm("MistralCausalLM", _kh().models.MistralBackbone(sliding_window=4, **_LLAMA), bias_free=True)


def mixtral() -> HubCase:
    b = _kh().models.MixtralBackbone(num_experts=4, top_k=2, sliding_window=4, **_LLAMA)
    return _lm("MixtralCausalLM", b, bias_free=True)


def phi3() -> HubCase:
    b = _kh().models.Phi3Backbone(max_sequence_length=16, pretraining_sequence_length=16, **_LLAMA)
    return _lm("Phi3CausalLM", b, bias_free=True)


def smollm3() -> HubCase:
    b = _kh().models.SmolLM3Backbone(vocabulary_size=VOCAB, hidden_dim=HIDDEN, intermediate_dim=32, num_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, attention_bias=False,
                                     attention_dropout=0.0, rope_layer_enabled_list=[True, False],
                                     layer_types=["full_attention", "full_attention"], mlp_bias=False,
                                     layer_norm_epsilon=1e-6, max_position_embeddings=16, rope_theta=10000.0,
                                     partial_rotary_factor=1.0)
    return _lm("SmolLM3CausalLM", b, bias_free=True)


def gpt_neox() -> HubCase:
    b = _kh().models.GPTNeoXBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
                                     intermediate_dim=32, max_sequence_length=16)
    return _lm("GPTNeoXCausalLM", b)


def opt() -> HubCase:
    b = _kh().models.OPTBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
                                 intermediate_dim=32, dropout=0.0, max_sequence_length=16)
    return _lm("OPTCausalLM", b)


def bloom() -> HubCase:
    b = _kh().models.BloomBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
                                   intermediate_dim=32)
    return _lm("BloomCausalLM", b)


def falcon() -> HubCase:
    b = _kh().models.FalconBackbone(vocabulary_size=VOCAB, num_layers=2, num_attention_heads=2, hidden_dim=HIDDEN,
                                    intermediate_dim=32)
    return _lm("FalconCausalLM", b)


def llama2() -> HubCase:
    return _lm("LlamaCausalLM", _kh().models.LlamaBackbone(**_LLAMA), bias_free=True)


def llama3() -> HubCase:
    return _lm("Llama3CausalLM", _kh().models.Llama3Backbone(**_LLAMA), bias_free=True)


def gpt2() -> HubCase:
    b = _kh().models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
                                  intermediate_dim=32, max_sequence_length=16)
    return _lm("GPT2CausalLM", b)


# ----------------------------------------------------------------------------- encoders (TextClassifier)
_ENC = dict(num_layers=2, num_heads=2, hidden_dim=HIDDEN, intermediate_dim=32)


def bert() -> HubCase:
    b = _kh().models.BertBackbone(vocabulary_size=VOCAB, max_sequence_length=16, **_ENC)
    return _classifier("BertTextClassifier", b, segments=True)


def distilbert() -> HubCase:
    b = _kh().models.DistilBertBackbone(vocabulary_size=VOCAB, max_sequence_length=16, **_ENC)
    return _classifier("DistilBertTextClassifier", b)


def roberta() -> HubCase:
    b = _kh().models.RobertaBackbone(vocabulary_size=VOCAB, max_sequence_length=16, **_ENC)
    return _classifier("RobertaTextClassifier", b)


def xlm_roberta() -> HubCase:
    b = _kh().models.XLMRobertaBackbone(vocabulary_size=VOCAB, max_sequence_length=16, **_ENC)
    return _classifier("XLMRobertaTextClassifier", b)


def albert() -> HubCase:
    b = _kh().models.AlbertBackbone(vocabulary_size=VOCAB, embedding_dim=8, max_sequence_length=16, **_ENC)
    return _classifier("AlbertTextClassifier", b, segments=True)


def deberta_v3() -> HubCase:
    b = _kh().models.DebertaV3Backbone(vocabulary_size=VOCAB, max_sequence_length=16, bucket_size=4, dropout=0.0,
                                       **_ENC)
    return _classifier("DebertaV3TextClassifier", b)


def electra() -> HubCase:
    b = _kh().models.ElectraBackbone(vocab_size=VOCAB, embedding_dim=HIDDEN, max_sequence_length=16, dropout=0.0,
                                     **_ENC)
    return _headed(b, _text(segments=True, pad_last=2), "token_ids", pool="none", output="pooled_output")


# ----------------------------------------------------------------------------- vision
def vit() -> HubCase:
    b = _kh().models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=HIDDEN,
                                 mlp_dim=32)
    return _image_classifier("ViTImageClassifier", b)


def deit() -> HubCase:
    b = _kh().models.DeiTBackbone(image_shape=(16, 16, 3), patch_size=4, **_ENC)
    return _image_classifier("DeiTImageClassifier", b)


def dinov2() -> HubCase:
    b = _kh().models.DINOV2Backbone(patch_size=4, num_layers=2, hidden_dim=HIDDEN, num_heads=2, intermediate_dim=32,
                                    image_shape=(16, 16, 3), position_embedding_shape=(16, 16, 3))
    return _headed(b, _image(16), None, pool="first")


def siglip_vision() -> HubCase:
    b = _kh().models.SigLIPVisionEncoder(patch_size=4, hidden_dim=HIDDEN, num_layers=2, num_heads=2,
                                         intermediate_dim=32, image_shape=(16, 16, 3))
    return _headed(b, _image(16), None, pool="none")  # its MAP head pools


def clip_vision() -> HubCase:
    b = _kh().models.CLIPVisionEncoder(patch_size=4, hidden_dim=HIDDEN, num_layers=2, num_heads=2,
                                       intermediate_dim=32, image_shape=(16, 16, 3))
    return _headed(b, _image(16), None, pool="first")


def swin() -> HubCase:
    b = _kh().models.SwinTransformerBackbone(image_shape=(32, 32, 3), embed_dim=HIDDEN, depths=(1, 1),
                                             num_heads=(2, 2), window_size=4, patch_size=4, drop_path=0.0)
    return _image_classifier("SwinTransformerImageClassifier", b, size=32)


#: family name -> builder of its tiny model
FAMILIES: dict[str, Callable[[], HubCase]] = {
    "Gemma": gemma, "Gemma 2": gemma2, "Gemma 3": gemma3, "Gemma 3 vision": gemma3_vision,
    "Qwen 2": qwen2, "Qwen 3": qwen3, "Qwen 2 MoE": qwen2_moe, "Qwen 3 MoE": qwen3_moe,
    "Mistral": mistral, "Mixtral": mixtral, "Phi-3": phi3, "SmolLM3": smollm3, "GPT-NeoX": gpt_neox, "OPT": opt,
    "Bloom": bloom, "Falcon": falcon, "Llama 2": llama2, "Llama 3": llama3, "GPT-2": gpt2,
    "BERT": bert, "DistilBERT": distilbert, "RoBERTa": roberta, "XLM-R": xlm_roberta, "ALBERT": albert,
    "DeBERTa-v3": deberta_v3, "ELECTRA": electra,
    "ViT": vit, "DeiT": deit, "DINOv2": dinov2, "SigLIP vision": siglip_vision, "CLIP vision": clip_vision,
    "Swin": swin,
}


def build(name: str, seed: int = 0) -> HubCase:
    """The tiny model of family ``name``, with the same random weights for the same seed."""
    import keras

    keras.utils.set_random_seed(seed)
    return FAMILIES[name]()
