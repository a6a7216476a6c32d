"""WordPiece ids identical to Hugging Face's BERT tokenizer.

The reference is the `tokenizers` library's BERT pipeline (what
`BertTokenizerFast` runs; a test-only dependency). Realistic vocabularies,
cased and uncased, are trained with its WordPiece trainer in a temp dir:
on a built-in clinical corpus always, and on the real Open-i reports when
../shared/data is present (their other half is then the text compared).
"""

import random

import pytest

from jointcxr.data import tokenizer as tok

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Written for this test: report-like sentences and the characters BERT's
# basic tokenizer treats specially.
CORPUS = [
    "No focal consolidation, pleural effusion, or pneumothorax.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Interval placement of a right-sided PICC line; tip at the cavoatrial "
    "junction.", "Mild pulmonary edema (improved since 02/14/2019).",
    "Café-au-lait spots; naïve résumé of Ångström-level findings.",
    "Patient from Zürich, Straße 5 - Dr. Müller's note: ÉTAT STABLE.",
    "胸部X线：双肺纹理增粗，未见明显实变。", "肺炎 胸腔积液 心脏增大",
    "Ελληνικά: ΣΙΣΥΦΟΣ and σίσυφος.", "Русский текст: без патологии.",
    "Temperature 38.5°C ± 0.2, SpO2 95%… “quoted” ‘text’ — dash – dash.",
    "Lines:\tone\ttab\r\nwindows\u00a0nbsp\u3000ideographic space.",
    "Zero\u200bwidth and soft\u00adhyphen, bell\x07 and NUL\x00 chars.",
    "Emoji 🙂 and symbols ©®™ ← → ≥ ≤ µg.", "İstanbul DİYARBAKIR ǅemal ﬁnd.",
    "Right upper lobe 1.2 x 0.8 cm nodule, ?granuloma vs. neoplasm!!",
]
HARD = CORPUS + [
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,  # > 100 characters
    "x" * 100, "y" * 101, "", "   ", "\x85\x0b\x0c\x1c\u2028\u2029",
    "Tokens [CLS] and [SEP] written out; [MASK]ed [unused0] [cls].",
    "a[SEP]b", "ÅÆØ æøå ÀÉÎÕÜ àéîõü Ççñ", "Ǆ ǅ ǆ ẞ ß ﬀ Ⅻ ⅻ",
    "\U00020000\U0002A700 𠀀 CJK ext B", "ﾊﾝｶｸ ｶﾀｶﾅ ＦＵＬＬＷＩＤＴＨ １２３",
]


def _train(texts, lowercase: bool, tmp_path, name: str, size: int):
  """A vocab.txt trained on `texts` by the reference library."""
  ref = tokenizers.BertWordPieceTokenizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None,
      lowercase=lowercase)
  ref.train_from_iterator(texts, vocab_size=size, min_frequency=1,
                          special_tokens=SPECIALS, show_progress=False)
  d = tmp_path / name
  d.mkdir()
  path = ref.save_model(str(d))[0]
  reference = tokenizers.BertWordPieceTokenizer(
      path, clean_text=True, handle_chinese_chars=True, strip_accents=None,
      lowercase=lowercase)
  return path, reference


def _compare(path, reference, texts, lowercase):
  ours = tok.load_tokenizer(path)
  assert isinstance(ours, tok.WordPieceTokenizer)
  assert ours.lower_case == lowercase  # read from the vocabulary itself
  for text in texts:
    want = reference.encode(text, add_special_tokens=False).ids
    assert ours.encode(text) == want, (text, reference.encode(
        text, add_special_tokens=False).tokens)
  return ours


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased",
                                                           "cased"])
def test_identical_ids_on_built_in_corpus(lowercase, tmp_path):
  path, reference = _train(CORPUS * 3, lowercase, tmp_path, "v", 600)
  ours = _compare(path, reference, HARD, lowercase)
  assert ours.unk_id in ours.encode("y" * 101)
  # A vocabulary this small splits words into pieces, so "##" matters.
  assert any(t.startswith("##") for t in reference.get_vocab())


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased",
                                                           "cased"])
def test_truncation_and_padding_like_reference(lowercase, tmp_path):
  path, reference = _train(CORPUS * 3, lowercase, tmp_path, "v", 600)
  ours = tok.load_tokenizer(path)
  cls, sep, pad = (reference.token_to_id(t) for t in ("[CLS]", "[SEP]",
                                                      "[PAD]"))
  reference.post_processor = tokenizers.processors.BertProcessing(
      ("[SEP]", sep), ("[CLS]", cls))
  for max_len in (5, 12, 64):
    reference.enable_truncation(max_length=max_len)
    reference.enable_padding(length=max_len, pad_id=pad, pad_token="[PAD]")
    for text in CORPUS:
      # One sentence: [CLS] + its first max_len - 2 pieces + [SEP] + pads.
      enc = ours.encode_report([text], max_len, max_sentences=1)
      assert enc.ids.tolist() == reference.encode(text).ids, (text, max_len)


@pytest.mark.shared_data
@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased",
                                                           "cased"])
def test_identical_ids_on_real_reports(lowercase, shared_data, tmp_path):
  from data_prep import iu_xml  # pylint: disable=g-import-not-at-top
  reports = list(iu_xml.iter_reports(
      str(shared_data / "iu_xray" / "NLMCXR_reports.tgz"), {}))
  texts = [" ".join((r.findings, r.impression, r.indication, r.comparison))
           for r in reports]
  random.Random(0).shuffle(texts)
  train, test = texts[:len(texts) // 2], texts[len(texts) // 2:]
  path, reference = _train(train + CORPUS, lowercase, tmp_path, "v", 8000)
  assert len(reference.get_vocab()) > 3000
  _compare(path, reference, test + HARD, lowercase)


def test_casing_read_from_the_vocabulary(tmp_path):
  p = tmp_path / "vocab.txt"
  p.write_text("\n".join(SPECIALS + ["[unused0]", "heart", "##s"]) + "\n")
  assert tok.load_tokenizer(str(p)).lower_case
  p.write_text("\n".join(SPECIALS + ["heart", "Heart", "##s"]) + "\n")
  t = tok.load_tokenizer(str(p))
  assert not t.lower_case and t.encode("Heart hearts") == [6, 5, 7]
  assert tok.WordPieceTokenizer(str(p), lower_case=True).encode(
      "Heart") == [5]
  # A Hugging Face model directory's tokenizer_config.json decides.
  (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
  assert tok.load_tokenizer(str(p)).lower_case
  (tmp_path / "tokenizer_config.json").write_text("not json")
  assert not tok.load_tokenizer(str(p)).lower_case
