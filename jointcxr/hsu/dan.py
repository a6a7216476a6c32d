"""Hsu et al.'s fine-tuned DAN report encoder (`text=dan`).

The paper fine-tunes a deep averaging network but does not say on what
(METHODS.md §6). Our documented choice: the DAN of `jointcxr.models.dan`
(word dropout 0.3, ReLU MLP) with a linear head, its embedding initialised
from the same word vectors as the `word` family (word2vec trained on the
training reports, or a local GloVe file), fine-tuned end to end to predict
the report's 14 CheXpert labels (multi-label sigmoid cross-entropy; target
1 = positive, 0 = negative, uncertain or not mentioned: "U-zeros"). The
labels are those of the training split only; they are derived from the
report text by the labeler, so no image information leaks into the text
features. The report feature is the DAN's last hidden layer (the input of
the head).

Vocabulary: the word-vector vocabulary plus [PAD] = 0 and [UNK] = 1;
reports are truncated to `max_tokens` tokens.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from jointcxr.hsu import text_features
from jointcxr.models import dan as dan_lib

PAD, UNK = 0, 1


class DanClassifier(nn.Module):
  """DAN tower + linear label head.

  Attributes:
    vocab_size: rows of the embedding.
    embed_dim: word vector width.
    hidden: MLP widths of the DAN.
    word_dropout: DAN word dropout.
    num_labels: head outputs.
  """
  vocab_size: int
  embed_dim: int
  hidden: Sequence[int]
  word_dropout: float
  num_labels: int = 14

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    """Returns (label logits [B, L], report features [B, hidden[-1]])."""
    out = dan_lib.DAN(self.vocab_size, self.embed_dim, tuple(self.hidden),
                      self.word_dropout, name="dan")(
                          tokens, tokens != PAD, train=train)
    return nn.Dense(self.num_labels, name="head")(out["global"]), out[
        "global"]


def encode(docs: Sequence[Sequence[str]], index: dict[str, int],
           max_tokens: int) -> np.ndarray:
  """Token ids [N, max_tokens] (+2 offset for [PAD]/[UNK]), padded."""
  out = np.full((len(docs), max_tokens), PAD, np.int32)
  for i, toks in enumerate(docs):
    ids = [index.get(t, UNK - 2) + 2 for t in toks[:max_tokens]]
    out[i, :len(ids)] = ids
  return out


def train_dan(train_docs: Sequence[Sequence[str]], labels: np.ndarray,
              wv: text_features.WordVectors, cfg: mlc.ConfigDict, seed: int
              ) -> tuple[DanClassifier, dict, dict[str, float]]:
  """Fine-tunes the DAN on the training reports' labels.

  Args:
    train_docs: tokenised training reports.
    labels: [N, 14] labels (1 / 0 / -1 / NaN).
    wv: word vectors initialising the embedding.
    cfg: `hidden`, `word_dropout`, `steps`, `batch_size`, `lr`,
      `max_tokens`.
    seed: PRNG seed (initialisation, batches, dropout).

  Returns:
    (module, params, {"loss_initial", "loss_final"}: label loss on the
    training reports before and after fine-tuning).
  """
  if len(train_docs) != len(labels):
    raise ValueError(f"DAN: {len(train_docs)} reports but {len(labels)} "
                     "label rows")
  model = DanClassifier(len(wv.words) + 2, wv.dim, tuple(cfg.hidden),
                        cfg.word_dropout, labels.shape[1])
  tokens = jnp.asarray(encode(train_docs, wv.index, cfg.max_tokens))
  target = jnp.asarray(np.nan_to_num(labels, nan=0.0) == 1, jnp.float32)
  rng = jax.random.PRNGKey(seed)
  params = nn.meta.unbox(model.init(rng, tokens[:1])["params"])
  emb = np.asarray(params["dan"]["embed"]["embedding"]).copy()
  emb[2:] = wv.vectors
  emb[PAD] = 0.0
  params["dan"]["embed"]["embedding"] = jnp.asarray(emb)
  tx = optax.adam(cfg.lr)
  opt = tx.init(params)
  bs = min(cfg.batch_size, len(train_docs))

  @jax.jit
  def step(params, opt, key):
    kb, kd = jax.random.split(key)
    idx = jax.random.choice(kb, tokens.shape[0], (bs,), replace=False)

    def loss_fn(p):
      logits, _ = model.apply({"params": p}, tokens[idx], train=True,
                              rngs={"dropout": kd})
      return jnp.mean(optax.sigmoid_binary_cross_entropy(logits,
                                                         target[idx]))

    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  # Full-data loss (no dropout) on up to 4,096 training reports, before and
  # after fine-tuning: evidence that the encoder learned the labels.
  probe = slice(0, min(4096, tokens.shape[0]))

  @jax.jit
  def eval_loss(params):
    logits, _ = model.apply({"params": params}, tokens[probe])
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits,
                                                       target[probe]))

  stats = {"loss_initial": float(eval_loss(params))}
  for i in range(cfg.steps):
    params, opt, _ = step(params, opt, jax.random.fold_in(rng, i + 1))
  stats["loss_final"] = float(eval_loss(params))
  return model, params, stats


def dan_features(model: DanClassifier, params: dict,
                 docs: Sequence[Sequence[str]], index: dict[str, int],
                 max_tokens: int, batch_size: int = 256) -> np.ndarray:
  """[N, hidden[-1]] report features from the fine-tuned DAN."""
  fn = jax.jit(lambda t: model.apply({"params": params}, t)[1])
  tokens = encode(docs, index, max_tokens)
  out = []
  for s in range(0, len(tokens), batch_size):
    chunk = tokens[s:s + batch_size]
    pad = batch_size - len(chunk)
    if pad:  # one compiled shape for every batch
      chunk = np.concatenate([chunk, np.zeros((pad, max_tokens), np.int32)])
    out.append(np.asarray(fn(jnp.asarray(chunk)))[:batch_size - pad])
  if not out:
    return np.zeros((0, model.hidden[-1]), np.float32)
  return np.concatenate(out).astype(np.float32)
