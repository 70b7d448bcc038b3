"""The sentence-transformers model exported once to ONNX and run on ONNX Runtime.

Why: the query embedding was ~90 % of a question's time. The same weights on
ONNX Runtime, with its fused attention and layer-norm kernels, embed a dev
question in about a quarter of torch's time (p50 52 → 13 ms on two cores,
eval/bench.py), and the serving process imports and loads faster (no torch). The export is checked against torch on probe
texts before it is used, so vectors stay interchangeable with those already in
an index (same model id, cosine ≥ 0.9999).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EXPORT_VERSION = 2
# Probe texts for the export check: one token, CJK, mixed scripts, and a long passage (padding in a batch).
PROBES = ["你", "query: 网上买的衣服不喜欢能退吗", "passage: 消费者有权自收到商品之日起七日内退货，且无需说明理由。" * 8,
          "query: refund 多久到账～（急）ＡＢＣ１２３"]
MIN_PROBE_COSINE = 0.9999


class ExportError(RuntimeError):
    """The model cannot be exported (unsupported modules) or the export does not match torch."""


def _pooling(model_path: Path) -> tuple[str, int]:
    """Supported layouts: Transformer + Pooling(mean|cls) [+ Normalize]; returns (pooling, max_seq_length)."""
    modules = json.loads((model_path / "modules.json").read_text(encoding="utf-8"))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise ExportError(f"unsupported sentence-transformers modules for ONNX: {kinds}")
    pool_cfg = json.loads((model_path / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    on = [k for k, v in pool_cfg.items() if k.startswith("pooling_mode_") and v is True]
    if on not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"]):
        raise ExportError(f"unsupported pooling for ONNX: {on}")
    cfg_file = model_path / "sentence_bert_config.json"
    max_len = json.loads(cfg_file.read_text(encoding="utf-8")).get("max_seq_length", 512) if cfg_file.exists() else 512
    return ("mean" if on[0].endswith("mean_tokens") else "cls"), int(max_len or 512)


def export_path(model_path: Path, cache_dir: Path) -> Path:
    """Keyed by the weights file, so a changed model folder gets a fresh export."""
    weights = next((model_path / n for n in ("model.safetensors", "pytorch_model.bin") if (model_path / n).exists()), None)
    if weights is None:
        raise ExportError(f"no model weights in {model_path}")
    st = weights.stat()
    key = hashlib.sha1(f"{model_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{EXPORT_VERSION}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "onnx" / f"{model_path.name}-{key}" / "model.onnx"


def export(model_path: Path, out: Path) -> Path:
    """torch → ONNX with pooling and L2 normalisation inside the graph, verified before it is kept.

    The weights go to a separate ``model.onnx.data`` file, which ONNX Runtime maps
    instead of copying: the session loads in a quarter of a second and the serving
    process holds no second copy of the 470 MB embedding table.
    """
    import onnx
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    pooling, _ = _pooling(model_path)
    hf_logging.set_verbosity_error()
    # Eager attention traces to plain MatMul/Softmax, which ONNX Runtime's transformer optimizer can fuse.
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    encoder = Encoder(model).eval()
    tokenizer = load_tokenizer(model_path, 512)
    ids, mask = _batch(tokenizer, PROBES)
    tmp_dir = out.parent.with_name(f"{out.parent.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    traced, tmp = tmp_dir / "traced.onnx", tmp_dir / out.name
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        torch.onnx.export(
            encoder, (torch.from_numpy(ids), torch.from_numpy(mask)), str(traced),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                          "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    try:
        # The fused graph first; the plain trace if fusion is impossible or does not match torch.
        errors = []
        for graph in (_fused(traced, model.config), onnx.load(str(traced))):
            if graph is None:
                continue
            for f in (tmp, tmp.with_name(out.name + ".data")):
                f.unlink(missing_ok=True)
            onnx.save_model(graph, str(tmp), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=out.name + ".data", size_threshold=1024)
            session = _session(tmp, 1)
            got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            # Also one text alone: a trace that baked in the probe batch's shape would fail here.
            alone = session.run(None, dict(zip(("input_ids", "attention_mask"), _batch(tokenizer, PROBES[:1]))))[0]
            cos = np.append((got * expected).sum(1), float(alone[0] @ expected[0]))
            if cos.min() >= MIN_PROBE_COSINE:
                break
            errors.append(f"min cosine {cos.min():.6f}")
        else:
            raise ExportError(f"ONNX export differs from torch ({'; '.join(errors)})")
        traced.unlink()
        (tmp_dir / "source.json").write_text(json.dumps({"model_path": str(model_path.resolve())}), encoding="utf-8")
        try:
            os.replace(tmp_dir, out.parent)
        except OSError:
            if not out.exists():  # else another process finished the same export first
                raise
        _remove_stale_exports(model_path, out.parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def _remove_stale_exports(model_path: Path, keep: Path) -> None:
    """Earlier exports of the same model folder (older weights or EXPORT_VERSION): ~470 MB each."""
    source = str(model_path.resolve())
    for other in keep.parent.glob(f"{model_path.name}-*"):
        marker = other / "source.json"
        if other == keep or other.name.endswith(".tmp") or not marker.exists():
            continue
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("model_path") == source:
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _fused(traced: Path, config):
    """ONNX Runtime's transformer fusions (attention, skip-layernorm, bias-gelu, embedding-layernorm).

    About 15 % faster per query on two cores (p50 15.2 → 12.8 ms, p95 51.6 → 45.5 ms on the 253 dev
    questions, measured interleaved). None when the optimizer does not apply to this architecture.
    """
    try:
        from onnxruntime.transformers import optimizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optimizer.optimize_model(str(traced), model_type="bert", opt_level=0,
                                            num_heads=int(config.num_attention_heads),
                                            hidden_size=int(config.hidden_size)).model
    except Exception as exc:  # noqa: BLE001 - any failure means: keep the plain trace
        log.info("transformer fusion not applied (%s)", exc)
        return None


def load_tokenizer(model_path: Path, max_len: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


def _batch(tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _arrays(tokenizer.encode_batch(texts))


def _arrays(encs) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def _session(path: Path, threads: int, initializers=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    for name, value in initializers or ():
        so.add_initializer(name, value)
    # Worker threads spin while a query runs (waking sleeping ones between its ~200 operators costs a third of
    # the time on two cores) but stop when it ends, so an idle server leaves the other core to a rebuild.
    # Measured on 2 cores, 253 dev questions, p50/p95 ms: spin + stop 13.9/35.6, no spin 20.6/46.6, one
    # thread 22.3/63.2; with a busy-loop on the other core 25.4/74.2, 21.6/51.5, 22.2/61.2 (one thread is
    # RAG_THREADS=1, the choice for a machine that is always busy).
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """``encode(texts)`` → L2-normalised float32 vectors; texts already carry their prefix."""

    def __init__(self, model_path: Path, cache_dir: Path, threads: int):
        _, max_len = _pooling(model_path)
        path = export_path(model_path, cache_dir)
        if not path.exists():
            log.info("exporting %s to ONNX at %s (one-off, ~40 s)", model_path, path)
            export(model_path, path)
        self.path = path
        self.tokenizer = load_tokenizer(model_path, max_len)
        self.threads = threads
        self.session = _session(self.path, threads)
        self._lean = None
        self._lean_lock = threading.Lock()
        width = self.session.get_outputs()[0].shape[-1]
        self.dim = width if isinstance(width, int) else int(self.encode(["dim"]).shape[1])

    def encode(self, texts: list[str], lean: bool = False) -> np.ndarray:
        """``lean``: on the one-thread session (``lean_session``), for calls running beside others."""
        session = self.lean_session() if lean and self.threads > 1 else self.session
        encs = self.tokenizer.encode_batch(texts)
        groups = length_groups([len(e.ids) for e in encs])
        if len(groups) == 1:
            return self._run(encs, session)
        parts = [self._run([encs[i] for i in group], session) for group in groups]
        out = np.empty((len(encs), parts[0].shape[1]), dtype=np.float32)
        for group, vecs in zip(groups, parts):
            out[group] = vecs
        return out

    def _run(self, encs, session=None) -> np.ndarray:
        ids, mask = _arrays(encs)
        vecs = (session or self.session).run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def lean_session(self):
        """A second session of the same model with one intra-op thread, for a served process under load.

        Why: the main session splits each call over ``threads`` spinning threads, the fastest for
        one question at a time; but when several calls run at once (many shoppers), those threads
        compete for the same two cores and spin while they wait. Calls running beside another
        one go here instead: one thread each, no spinning, one core per call. Its large weights
        (≥ 1 MB: the embedding table, the dense layers) are the export's ``model.onnx.data``
        mapped read-only and handed to ONNX Runtime, not copied: about 80 MB more memory, not
        another 470 MB. Made on first use; on any failure the main session is used.
        """
        if self._lean is None:
            with self._lean_lock:
                if self._lean is None:
                    try:
                        self._lean_weights = _mapped_initializers(self.path)  # must outlive the session
                        self._lean = _session(self.path, 1, self._lean_weights)
                    except Exception as exc:  # noqa: BLE001 - an optimisation only
                        log.warning("one-thread encoder session unavailable (%s); using the main one", exc)
                        self._lean = self.session
        return self._lean


def _mapped_initializers(path: Path, min_bytes: int = 1 << 20) -> list:
    """(name, OrtValue) for the external tensors of ``path`` of at least ``min_bytes``, backed by a
    read-only memory map of the data file (the OrtValues keep the map alive)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    data = None
    out = []
    for init in model.graph.initializer:
        where = {e.key: e.value for e in init.external_data}
        if not where or int(where.get("length", 0)) < min_bytes or init.data_type != onnx.TensorProto.FLOAT:
            continue
        if data is None:
            data = np.memmap(path.parent / where["location"], dtype=np.uint8, mode="r")
        arr = np.frombuffer(data, dtype=np.float32, count=int(where["length"]) // 4,
                            offset=int(where.get("offset", 0))).reshape(list(init.dims))
        out.append((init.name, ort.OrtValue.ortvalue_from_numpy(arr)))
    return out


def length_groups(lengths: list[int], waste: float = 1.3) -> list[list[int]]:
    """Indexes grouped so that padding each group to its longest text costs at most ``waste`` × its tokens.

    Why: texts encoded together are padded to the longest one; a short question batched with a long
    story (or with its own focus sentence, rag/retrieve.py) would otherwise cost the story's length.
    Already similar lengths (the usual case) stay one group, in their order.
    """
    if len(lengths) <= 1 or max(lengths) * len(lengths) <= waste * sum(lengths):
        return [list(range(len(lengths)))]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = [[]]
    total = 0
    for i in order:  # ascending: the newest member is the group's longest
        if groups[-1] and lengths[i] * (len(groups[-1]) + 1) > waste * (total + lengths[i]):
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += lengths[i]
    return groups
