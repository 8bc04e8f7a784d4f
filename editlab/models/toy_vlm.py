"""A tiny random-weight vision-language model in the standard transformers format, for tests and benchmarks.

:func:`build_toy_vlm` writes a Qwen2-VL-architecture model (``Qwen2VLForConditionalGeneration``, one text layer,
one vision block, hidden size 32) with its processor (``Qwen2VLProcessor``: the stock image processor and a
word-level tokenizer built here, with a chat template written for editlab) into a folder that
``AutoProcessor.from_pretrained`` / ``AutoModelForImageTextToText.from_pretrained`` and ``transformers serve``
load as they load any hub model. It measures nothing: its weights are random, so as a judge it agrees with
anything at chance. Its vocabulary is mostly the digits 0-9, so a one-token answer is usually a number
and a judge protocol that asks for one integer can parse it; longer answers are digit strings that a strict
parser rejects (that is how tests exercise unparseable replies).
"""

from __future__ import annotations

from pathlib import Path

#: Tokens of the Qwen2-VL chat format that the processor and the model's config refer to.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
WORDS = [str(i) for i in range(10)] + ["[UNK]", " ", "\n", "assistant", "user", "system", "score", "image", "edit", ",",
                                       ".", ":", "the", "a"]

# A chat template for the content-list messages of the OpenAI chat format (text and image parts).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer():  # noqa: ANN202 (transformers type)
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(WORDS + SPECIAL_TOKENS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    # every space, newline, digit, word and sign is its own piece, and pieces decode back fused: the decoded
    # prompt equals the rendered chat template (the server's reply parser anchors on "<|im_start|>assistant\n")
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\d|[A-Za-z]+|[^\sA-Za-z\d]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[1:])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_toy_vlm(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-VL model and its processor to ``folder`` (created); returns the folder."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 4096,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
                     "bos_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = True
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder
