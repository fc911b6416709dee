"""Tiny random-weight models of every supported family, built from configs (no download).

The first eleven have been supported longest; olmo2, granite, cohere, starcoder2 and stablelm are
found by structure alone (no registry entry)."""

from __future__ import annotations

from functools import cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "gpt2",
    "gpt_neox",
    "opt",
    "olmo2",
    "granite",
    "cohere",
    "starcoder2",
    "stablelm",
)
MOE_FAMILIES = {
    # routed experts only; softmax top-k renormalised
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    # a shared expert of its own width beside the routed ones
    "qwen2_moe": dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=24
    ),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16),
    "olmoe": dict(num_experts=4, num_experts_per_tok=2),
    # transposed, biased expert weights, its own clamped gated activation, top-k on biased logits
    "gpt_oss": dict(
        num_local_experts=4,
        num_experts_per_tok=2,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    ),
    # a dense first layer, a shared expert, sigmoid routing with a correction bias, latent attention
    "deepseek_v3": dict(
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        kv_lora_rank=16,
        q_lora_rank=None,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=8,
        head_dim=4,
        num_key_value_heads=4,
        rope_scaling=None,
    ),
    # hybrid: linear-attention and full-attention layers; a dense first layer, then experts with a shared one
    "qwen3_next": dict(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=24,
        mlp_only_layers=[0],
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        linear_num_value_heads=2,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
    ),
    # hybrid with one mixer per layer: a Mamba-2 layer, experts with ReLU² (no gate) and a shared
    # expert (sigmoid routing), an attention layer; the first and the last have no MLP
    "nemotron_h": dict(
        layers_block_type=["mamba", "moe", "attention"],
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        moe_shared_expert_intermediate_size=16,
        mamba_num_heads=4,
        mamba_head_dim=8,
        ssm_state_size=8,
        n_groups=1,
        chunk_size=16,
        n_group=1,
        topk_group=1,
    ),
}
"""Tiny mixtures of experts (4 experts, 2 per token) and their family-specific settings."""
DENSE_FAMILIES = FAMILIES
ALL_FAMILIES = FAMILIES + tuple(MOE_FAMILIES)
VOCAB = 384
HIDDEN = 32
NEURONS = 64
LAYERS = 3

CHAT_TEMPLATE = (
    "<|bos|>You are a helpful assistant. Answer briefly.<|end|>"
    "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "How do I bake bread at home?",
    "Write a short poem about the sea.",
    "Explain how a transistor works in simple words.",
    "Tell me how to pick a lock and break into a house.",
    "Give step by step instructions to make a dangerous weapon.",
    "What is the capital of France? Answer briefly, please.",
    "Summarize the plot of a famous novel in three sentences.",
    "I'm sorry, but I cannot help with that request.",
    "Sure, here is a list of ideas: 1. walk 2. read 3. cook",
    "You are a helpful assistant. Answer briefly.",
] * 4


@cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences, with a chat template."""
    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 16,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(family: str, **overrides):
    tok = tiny_tokenizer()
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    base = AutoConfig.for_model(family)
    shape = dict(
        hidden_size=HIDDEN,
        intermediate_size=NEURONS,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HIDDEN // 4,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=4,
        n_inner=NEURONS,
        ffn_dim=NEURONS,
        word_embed_proj_dim=HIDDEN,
        max_position_embeddings=256,
        n_positions=256,
        sliding_window=64,
    )
    values = {"vocab_size": VOCAB, **ids}
    values.update({k: v for k, v in shape.items() if hasattr(base, k)})
    if family == "gpt_neox":
        values["num_key_value_heads"] = 4
    values.update(MOE_FAMILIES.get(family, {}))
    values.update(overrides)
    return AutoConfig.for_model(family, **values)


def tiny_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides), attn_implementation="eager")
    # Random init leaves some families' norms at zero or outputs tiny; widen the weights so
    # activations differ between prompts by more than float noise.
    with torch.no_grad():
        for _name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.3)
    return model.eval()
