"""What a set of keys holds when it is not a model's own weights: LoRA adapters, an
optimizer's state, or a quantized model's codes and scales. They are met as "the wrong
file" (an ``adapter_model.bin`` loaded into the base model, an ``optimizer.pt`` loaded as
the model, an 8-bit export loaded into a float model), and as "the wrong side" (a base
checkpoint loaded into a model already wrapped with adapters); saying which turns
"belongs to a different model" into the step that fixes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .align import spread

# PEFT (lora_A/lora_B, lora_embedding_A/B, lora_magnitude_vector), torchtune
# (lora_a/lora_b), kohya and diffusers' older format (lora_down/lora_up, alpha)
_LORA = re.compile(r"(?:^|[._])lora(?:_embedding)?_(?:A|B|a|b|up|down|magnitude_vector)"
                   r"(?:[._]|$)")
_OPTIMIZER = re.compile(r"(?:^|\.)state\.\d+\.(?:exp_avg|exp_avg_sq|max_exp_avg_sq|step|"
                        r"momentum_buffer|square_avg|acc_delta|sum|mu|eta|ax|prev|"
                        r"step_size|exp_inf)$")
def _share(keys: Iterable[str], pattern: re.Pattern[str]) -> float:
    # an even spread (align's sample): adapters and optimizer state are uniform
    listed = spread(list(keys))
    if not listed:
        return 0.0
    return sum(1 for k in listed if pattern.search(k)) / len(listed)


def mostly_lora(keys: Iterable[str]) -> bool:
    """Whether at least half of ``keys`` are LoRA adapter tensors."""
    return _share(keys, _LORA) >= 0.5


def mostly_optimizer_state(keys: Iterable[str]) -> bool:
    """Whether at least half of ``keys`` are an optimizer's per-parameter state
    (``state.<i>.exp_avg`` and the like)."""
    return _share(keys, _OPTIMIZER) >= 0.5


def is_lora_key(key: str) -> bool:
    return _LORA.search(key) is not None


# Quantized layers' extra tensors: bitsandbytes 8-bit (SCB, weight_format), bitsandbytes
# 4-bit (weight.absmax, weight.quant_map, weight.quant_state...), GPTQ and AWQ (qweight,
# qzeros, scales, g_idx); group 1 is the layer's name
_QUANT = re.compile(r"(?:(.*)\.)?(?:(SCB|weight_format)|weight\.(absmax|quant_map|nested_absmax|"
                    r"nested_quant_map|quant_state\.bitsandbytes__\w+)|(qweight|qzeros|scales|"
                    r"g_idx))")


def quantized_layers(keys: Iterable[str]) -> tuple[str, dict[str, list[str]]] | None:
    """(scheme, {layer: its quantization tensors}) when ``keys`` hold a quantized model's
    layers (a layer counts when it has its scheme's telltale tensor), else None."""
    layers: dict[str, list[str]] = {}
    schemes: set[str] = set()
    for key in keys:
        m = _QUANT.fullmatch(key)
        if m is None:
            continue
        layers.setdefault(m.group(1) or "", []).append(key)
        if m.group(2) == "SCB":
            schemes.add("bitsandbytes 8-bit")
        elif m.group(3) and m.group(3) != "quant_map":
            schemes.add("bitsandbytes 4-bit")
        elif m.group(4) == "qweight":
            schemes.add("GPTQ/AWQ")
    if not schemes:
        return None
    telltale = ("SCB", "absmax", "quant_state", "qweight")
    layers = {layer: found for layer, found in layers.items()
              if any(t in k.rpartition(layer)[2] for k in found for t in telltale)}
    return (" and ".join(sorted(schemes)), layers) if layers else None
