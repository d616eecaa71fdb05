# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make a tiny Llama that vLLM's CPU build serves, deterministically and without torch or the network.

    python3 tests/harness/make_tiny_model.py DEST_DIR [--seed N]

Writes config.json, generation_config.json, model.safetensors (random float32 weights under the Hugging Face
Llama tensor names), tokenizer.json (a byte-level BPE trained here on a built-in text), tokenizer_config.json
(with a chat template, so /v1/chat/completions works), special_tokens_map.json and README.md: about 6 MB.
The same seed gives byte-identical files, so their sha256 sums are stable (tests and manifests rely on it).

Sizes are the smallest vLLM's CPU attention accepts: head_dim 64 (16 is refused), see HARNESS-NOTES.md.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HIDDEN_SIZE = 256
NUM_HEADS = 4
NUM_KV_HEADS = 2
NUM_LAYERS = 2
INTERMEDIATE_SIZE = 512
MAX_POSITIONS = 512
TARGET_VOCAB = 500
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [UNK, BOS, EOS]
# BOS (as Llama's templates start), role: content lines, then the assistant's turn when asked for a generation prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

# Training text: enough distinct words for ~240 merges on top of the 256 byte symbols and 3 special tokens.
CORPUS = """\
An Ansible collection turns Ubuntu workstations with NVIDIA GPUs into private language model servers.
The driver comes from the NVIDIA repository, the engine is vLLM in its own virtual environment,
the weights live in a shared Hugging Face cache, and a systemd unit serves the model on port 8000.
Operators describe every host in one inventory: the GPUs, the model, the tensor parallel size and the port.
Gates read the hardware before each step: every NVLink link must be active, the memory junction must stay cool,
and the number of GPUs that torch sees must equal the number the inventory expects.
The quick brown fox jumps over the lazy dog while the model answers questions about the weather.
Tokens flow from the prompt through attention and feed forward layers to the next token, one at a time.
Small models make fast tests; large models make useful answers. Both load from the same cache layout.
Hello, world! How are you today? I am fine, thank you. What time is it? It is time to serve the model.
user: write a haiku about graphics cards. assistant: fans spin in the dark, tensors flow through copper lanes.
system: you are a helpful assistant that answers briefly and honestly.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 2048 4096 8192.
"""


def train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB,
        min_frequency=1,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # Repeat the lines so merge counts are far from ties: the trainer breaks ties deterministically,
    # but clear winners keep the vocabulary stable across tokenizers releases too.
    lines = CORPUS.splitlines()
    tokenizer.train_from_iterator(lines * 4, trainer=trainer, length=len(lines) * 4)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="%s $A" % BOS, pair="%s $A %s $B" % (BOS, BOS), special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def model_config(vocab_size: int, bos_id: int, eos_id: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN_SIZE,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HIDDEN_SIZE // NUM_HEADS,
        "num_hidden_layers": NUM_LAYERS,
        "intermediate_size": INTERMEDIATE_SIZE,
        "hidden_act": "silu",
        "vocab_size": vocab_size,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "transformers_version": "4.46.0",
    }


def tensor_shapes(config: dict) -> dict:
    """Every tensor of a Hugging Face LlamaForCausalLM checkpoint, name -> shape (out, in) as nn.Linear stores it."""
    hidden = config["hidden_size"]
    head_dim = config["head_dim"]
    kv_width = config["num_key_value_heads"] * head_dim
    q_width = config["num_attention_heads"] * head_dim
    inner = config["intermediate_size"]
    vocab = config["vocab_size"]
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = "model.layers.%d." % layer
        shapes.update({
            prefix + "self_attn.q_proj.weight": (q_width, hidden),
            prefix + "self_attn.k_proj.weight": (kv_width, hidden),
            prefix + "self_attn.v_proj.weight": (kv_width, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, q_width),
            prefix + "mlp.gate_proj.weight": (inner, hidden),
            prefix + "mlp.up_proj.weight": (inner, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inner),
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
        })
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def silent_token_ids(tokenizer: Tokenizer) -> list:
    """Tokens that stream no text on their own: the special tokens and the lone bytes of multi-byte characters."""
    return [token_id for token_id in range(tokenizer.get_vocab_size())
            if tokenizer.decode([token_id], skip_special_tokens=True).strip("\ufffd") == ""]


def random_weights(config: dict, seed: int, silent_ids=()) -> dict:
    """Random weights; the output rows of silent_ids are zero. Greedy decoding then never picks those tokens (their
    logit is 0, while the largest of the ~370 others is about 3 standard deviations above it), so every generated token
    streams text: an OpenAI proxy such as LiteLLM drops stream events whose text is empty, and a random model that
    settles on a silent token would stream nothing through it."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in sorted(tensor_shapes(config).items()):  # sorted: draw order fixed by name
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            tensors[name] = rng.normal(0.0, config["initializer_range"], size=shape).astype(np.float32)
    tensors["lm_head.weight"][list(silent_ids)] = 0.0
    return tensors


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_card(config: dict, seed: int) -> str:
    return (
        "---\nlicense: gpl-3.0\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- test\n---\n"
        "# tiny-llama (test fixture)\n\n"
        "Random weights (seed %d): it answers gibberish. It exists so that tests can serve a real LlamaForCausalLM "
        "with vLLM's CPU build and download it through a Hugging Face Hub stand-in.\n\n"
        "hidden %d, %d heads (head_dim %d), %d KV heads, %d layers, intermediate %d, vocab %d, float32.\n"
        "Made by tests/harness/make_tiny_model.py of the llmfleet.workstation collection.\n"
        % (seed, config["hidden_size"], config["num_attention_heads"], config["head_dim"],
           config["num_key_value_heads"], config["num_hidden_layers"], config["intermediate_size"],
           config["vocab_size"])
    )


def make_tiny_model(dest: Path, seed: int = 0) -> dict:
    """Write the model into dest (created if needed); returns its config."""
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    bos_id, eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    config = model_config(tokenizer.get_vocab_size(), bos_id, eos_id)
    tokenizer.save(str(dest / "tokenizer.json"), pretty=False)
    write_json(dest / "config.json", config)
    write_json(dest / "generation_config.json", {
        "bos_token_id": bos_id, "eos_token_id": eos_id, "transformers_version": config["transformers_version"],
    })
    write_json(dest / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "chat_template": CHAT_TEMPLATE,
    })
    write_json(dest / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK})
    weights = dest / "model.safetensors"
    save_file(random_weights(config, seed, silent_token_ids(tokenizer)), str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)  # safetensors creates it 0600; the other files follow the umask
    (dest / "README.md").write_text(model_card(config, seed), encoding="utf-8")
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("dest", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    config = make_tiny_model(args.dest, args.seed)
    size = sum(path.stat().st_size for path in args.dest.iterdir() if path.is_file())
    sys.stdout.write("%s: LlamaForCausalLM, vocab %d, %.1f MB\n" % (args.dest, config["vocab_size"], size / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
