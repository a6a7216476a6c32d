"""Trains a SentencePiece tokenizer on report text (deterministic, offline).

    python -m data_prep.tokenizer --input=DIR_or_FILE --vocab_size=8000 \
        --output=spm.model

`--input` is a converted TFDS directory (the `sentences` of its train
split), a text file (one sentence per line) or a CSV with a `text` /
`Reports` / `sentence` column. Special ids are fixed: <pad>=0, <unk>=1,
[CLS]=2, [SEP]=3, [MASK]=4; no BOS/EOS. Training runs in memory on one
thread without input shuffling, so the same input gives identical bytes.
"""

import csv
import io
import os
import sys
from typing import Iterable, Iterator, Sequence

SPECIAL_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, *,
                        seed: int = 0, model_type: str = "unigram",
                        lower_case: bool = True) -> bytes:
  """Trains a model and returns its serialized bytes.

  Args:
    sentences: training sentences.
    vocab_size: target size (a soft limit, so tiny corpora still train).
    seed: kept for API symmetry; SentencePiece training is deterministic
      given its input with one thread and no shuffling.
    model_type: "unigram" or "bpe".
    lower_case: NFKC with case folding (default) or plain NFKC.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  del seed
  sents = [" ".join(s.split()) for s in sentences]
  sents = [s for s in sents if s]
  if not sents:
    raise ValueError("no non-empty sentences to train the tokenizer on")
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sents), model_writer=buf, vocab_size=vocab_size,
      model_type=model_type, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
      pad_piece="<pad>", unk_piece="<unk>",
      user_defined_symbols=list(SPECIAL_SYMBOLS), hard_vocab_limit=False,
      num_threads=1, shuffle_input_sentence=False, character_coverage=1.0,
      input_sentence_size=0,
      normalization_rule_name="nmt_nfkc_cf" if lower_case else "nmt_nfkc",
      minloglevel=2)
  return buf.getvalue()


def read_sentences(path: str) -> Iterator[str]:
  """Sentences from a TFDS directory, a text file or a CSV."""
  if os.path.isdir(path):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder_from_directory(path)
    from jointcxr.data import features  # pylint: disable=g-import-not-at-top
    # Images stay encoded: only the sentences are read.
    ds = builder.as_dataset(split="train",
                            decoders=features.skip_image_decoding())
    for ex in tfds.as_numpy(ds):
      for s in ex["sentences"]:
        yield s.decode("utf-8")
    return
  if path.endswith(".csv"):
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
      reader = csv.reader(f)
      header = [h.strip().lower() for h in next(reader, [])]
      col = next((header.index(k) for k in ("text", "reports", "report",
                                            "sentence") if k in header), None)
      if col is None:
        raise ValueError(f"{path}: no text/Reports/sentence column in header "
                         f"{header}")
      for row in reader:
        if col < len(row):
          yield row[col]
    return
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      yield line.rstrip("\n")


def main(argv: Sequence[str]) -> int:
  """CLI entry point."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("input", None, "TFDS dir, text file or CSV.",
                      flag_values=fl)
  flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.", flag_values=fl)
  flags.DEFINE_string("output", None, "Where to write the .model file.",
                      flag_values=fl)
  flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "Model.",
                    flag_values=fl)
  try:
    fl(argv)
    if not fl.input or not fl.output:
      raise ValueError("--input and --output are required")
    if not os.path.exists(fl.input):
      raise ValueError(f"--input {fl.input} does not exist")
    model = train_sentencepiece(read_sentences(fl.input), fl.vocab_size,
                                model_type=fl.model_type)
  except (ValueError, flags.Error, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  tmp = fl.output + ".tmp"
  with open(tmp, "wb") as f:
    f.write(model)
  os.replace(tmp, fl.output)
  print(f"wrote {fl.output} ({len(model)} bytes)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
