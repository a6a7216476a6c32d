"""Image and text towers: parameter counts, shapes, conv lowerings, masking."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr.models import bert
from jointcxr.models import common
from jointcxr.models import dan
from jointcxr.models import densenet
from jointcxr.models import joimter_cnn
from jointcxr.models import resnet
from jointcxr.models import testing
from jointcxr.models import vit

# rbg keys: a real init compiles one sampler per parameter shape, and
# threefry's is several times slower to compile on XLA:CPU.
RNGS = {"params": jax.random.key(0, impl="rbg"),
        "dropout": jax.random.key(1, impl="rbg")}
TINY_BERT = dict(vocab_size=40, hidden=16, layers=1, heads=2, mlp_dim=32,
                 max_len=12, max_sentences=3, dropout=0.0)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  # NumPy, not jax.random: each new shape would compile a sampler.
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _vars(module, *args, **kw):
  """Host-filled variables (compiling a real init is slow on XLA:CPU)."""
  return testing.fill_variables(jax.eval_shape(
      lambda: module.init(RNGS, *args, **kw)))


def _count(module, *args, **kw) -> int:
  """Parameter count from abstract shapes only (no compilation)."""
  shapes = jax.eval_shape(lambda: module.init(RNGS, *args, **kw))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      nn.meta.unbox(shapes["params"])))


def test_parameter_counts_match_the_reference_implementations():
  # Reference totals (torchvision / timm / HF `num_parameters`) minus the
  # classifier or pooler, which the towers do not have.
  rgb = jnp.zeros((1, 224, 224, 3))
  gray = jnp.zeros((1, 224, 224, 1))
  fc = lambda d: d * 1000 + 1000
  assert _count(resnet.ResNet(depth=50, in_channels=3), rgb) == (
      25_557_032 - fc(2048))
  assert _count(resnet.ResNet(depth=18, in_channels=3), rgb) == (
      11_689_512 - fc(512))
  # A grayscale stem has a third of the 7x7x3x64 stem kernel.
  assert _count(resnet.ResNet(depth=50), gray) == (
      25_557_032 - fc(2048) - 7 * 7 * 2 * 64)
  assert _count(densenet.DenseNet(in_channels=3), rgb) == (
      7_978_856 - fc(1024))
  # timm vit_small_patch16_224 minus the head; our class token has no
  # position slot (big_vision layout), 384 fewer.
  assert _count(vit.ViT("S/16", pool="cls", in_channels=3), rgb) == (
      22_050_664 - fc(384) - 384)
  t = jnp.zeros((1, 8), jnp.int32)
  # HF BertModel (bert-base-uncased) minus its pooler.
  assert _count(bert.Bert(max_sentences=2), t, t > -1, t) == (
      109_482_240 - (768 * 768 + 768))


def test_image_tower_outputs():
  x = jnp.ones((2, 64, 64, 1))
  rn = resnet.ResNet(depth=18, width=4, stage_sizes=(1, 1, 1, 1),
                     norm="group", norm_groups=2)
  o = jax.eval_shape(lambda: rn.init_with_output(RNGS, x)[0])
  for i, stride in enumerate((2, 4, 8, 16, 32), start=1):
    assert o[f"conv{i}"].shape[1:3] == (64 // stride, 64 // stride)
  assert o["regions"].shape == (2, 2, 2, 32) and o["global"].shape == (2, 32)
  o = jax.eval_shape(lambda: resnet.ResNet(depth=50, width=4, stage_sizes=(
      1, 1, 1, 1)).init_with_output(RNGS, x)[0])
  assert o["regions"].shape == (2, 2, 2, 128)
  o = jax.eval_shape(lambda: vit.ViT("Ti/16", depth=1, pool="cls")
                     .init_with_output(RNGS, x)[0])
  assert o["regions"].shape == (2, 4, 4, 192) and o["global"].shape == (2,
                                                                         192)
  o = jax.eval_shape(lambda: densenet.DenseNet().init_with_output(
      RNGS, jnp.ones((1, 224, 224, 1)))[0])
  assert o["regions"].shape == (1, 7, 7, 1024)
  assert o["global"].shape == (1, 1024)
  with pytest.raises(ValueError, match="expected 1 input channel"):
    _vars(rn, jnp.ones((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="bad ViT variant 'L16'"):
    _vars(vit.ViT("L16"), x)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_output_stride_keeps_parameters_and_refines_the_grid(depth):
  x = _normal(0, (2, 64, 64, 1))
  kw = dict(depth=depth, width=4, stage_sizes=(1, 1, 1, 1), norm="group",
            norm_groups=2)
  v = _vars(resnet.ResNet(**kw), x)
  for os_, grid in ((32, 2), (16, 4), (8, 8)):
    rn = resnet.ResNet(**kw, output_stride=os_)
    # The same parameter tree (torchvision-compatible) serves every stride.
    assert jax.tree.map(jnp.shape, _vars(rn, x)) == jax.tree.map(
        jnp.shape, v)
    o = rn.apply(v, x)
    assert o["regions"].shape[1:3] == (grid, grid)
    assert o["conv3"].shape[1] == 64 // min(8, os_)
  # Stride 32 is the default; the first two stages are untouched.
  a = resnet.ResNet(**kw).apply(v, x)
  b = resnet.ResNet(**kw, output_stride=16).apply(v, x)
  np.testing.assert_array_equal(a["conv4"], b["conv4"])
  with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
    _vars(resnet.ResNet(**kw, output_stride=4), x)


def test_joimter_cnn_outputs_and_soft_attention():
  m = joimter_cnn.JoImTerCNN(channels=(4, 4, 8, 8, 16, 16), stem_channels=4,
                             region_dim=8, global_dim=6)
  x = _normal(2, (2, 256, 256, 1))
  v = _vars(m, x)
  o = jax.jit(m.apply)(v, x)
  assert o["regions"].shape == (2, 2, 2, 8) and o["global"].shape == (2, 6)
  assert o["stage4"].shape == (2, 4, 4, 8)
  # Each of the 16 maps is a softmax over positions: their sum is 16.
  np.testing.assert_allclose(o["attention4"].sum((1, 2)), 16.0, rtol=1e-5)
  assert "bias" not in v["params"]["region_proj"]
  # Other sizes round up like PyTorch: 224 -> 56 -> 28, 14, 7, 4, 2, 1.
  o = jax.eval_shape(lambda: m.init_with_output(
      RNGS, jnp.ones((1, 224, 224, 1)))[0])
  assert [o[f"stage{s}"].shape[1] for s in range(1, 7)] == [28, 14, 7, 4, 2,
                                                            1]
  assert o["regions"].shape == (1, 2, 2, 8)
  with pytest.raises(ValueError, match="expected 1 input channel"):
    _vars(m, jnp.ones((1, 256, 256, 3)))

  # SoftAttention against a float64 NumPy reference of the authors' block.
  sa = joimter_cnn.SoftAttention(heads=3)
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
  va = _vars(sa, jnp.asarray(x, jnp.float32))
  out = sa.apply(va, jnp.asarray(x, jnp.float32))
  p = jax.tree.map(np.float64, nn.meta.unbox(va["params"]))
  logits = x @ p["conv"]["kernel"] + p["conv"]["bias"]
  logits = np.where(logits > 0, logits, 0.01 * logits).reshape(2, 12, 3)
  a = np.exp(logits - logits.max(1, keepdims=True))
  a = (a / a.sum(1, keepdims=True)).sum(-1).reshape(2, 3, 4, 1)
  ref = x + p["scale"] * x * a
  np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[1], a[..., 0], rtol=1e-5)


# (kernel, stride, padding, size): 3x3 s1/s2 (even and odd sizes), the 7x7
# stem, 1x1 s1/s2 (plain matmuls), ViT-style patchify and a generic strided
# kernel without padding.
CONV_CASES = [(3, 1, 1, 7), (3, 2, 1, 8), (3, 2, 1, 7), (7, 2, 3, 9),
              (1, 2, 0, 6), (1, 1, 0, 5), (4, 4, 0, 8), (5, 3, 0, 11)]


def test_im2col_equals_xla_conv_in_float64():
  with jax.enable_x64(True):
    cases = []
    for k, stride, pad, size in CONV_CASES:
      x = jnp.asarray(_normal(size, (2, size, size, 3)), jnp.float64)
      convs = [common.Conv(4, k, stride, pad, use_bias=True, conv_impl=impl,
                           dtype=jnp.float64, param_dtype=jnp.float64)
               for impl in ("xla", "im2col")]
      cases.append((convs, _vars(convs[0], x), x))  # non-zero bias too

    @jax.jit
    def run(vx):  # one compilation for every case
      f = lambda v, x, m: jnp.sum(jnp.sin(m.apply(v, x)))
      return [[jax.value_and_grad(f, (0, 1))(v, x, m) for m in convs]
              for (convs, _, _), (v, x) in zip(cases, vx)]

    results = run([(v, x) for _, v, x in cases])
    for case, ((l1, g1), (l2, g2)) in zip(CONV_CASES, results):
      np.testing.assert_allclose(l1, l2, rtol=1e-12)
      for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12,
                                   err_msg=f"case {case}")


def test_im2col_resnet_matches_xla_and_remat_matches_plain():
  """Whole networks: im2col has xla's parameters and function; remat has
  the plain network's gradients.

  (Per-conv gradients are checked in float64 above. Through train-mode
  BatchNorm over 2 samples of 1x1 maps, float32 summation-order noise grows
  to ~1e-3, so the network check runs BN on its running statistics.)
  """
  x = _normal(4, (2, 32, 32, 1))
  kw = dict(depth=50, width=4, stage_sizes=(1, 1, 1, 1))
  plain, other = (resnet.ResNet(**kw, conv_impl=c) for c in ("xla",
                                                             "im2col"))
  v = _vars(plain, x)
  assert jax.tree.structure(v) == jax.tree.structure(
      jax.eval_shape(lambda: other.init(RNGS, x)))
  outs = jax.jit(lambda v: [m.apply(v, x) for m in (plain, other)])(v)
  for a, b in zip(*(jax.tree.leaves(o) for o in outs)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  kw = dict(depth=18, width=4, stage_sizes=(1, 1))
  plain, other = resnet.ResNet(**kw), resnet.ResNet(**kw, remat=True)
  x = x[:, :16, :16]
  v = _vars(plain, x)
  loss = lambda p, m: jnp.sum(m.apply(
      {"params": p, "batch_stats": v["batch_stats"]}, x)["global"] ** 2)
  grads = jax.jit(lambda p: [jax.grad(loss)(p, m) for m in (plain, other)])(
      v["params"])
  for a, b in zip(*(jax.tree.leaves(g) for g in grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_adaptive_avg_pool_uses_pytorch_bins():
  x = np.random.default_rng(1).normal(size=(1, 5, 4, 2))
  got = common.adaptive_avg_pool(jnp.asarray(x), 2, 2)
  # PyTorch bins: rows floor(i*5/2)..ceil((i+1)*5/2) -> {0,1,2}, {2,3,4}.
  rows, cols = ([0, 1, 2], [2, 3, 4]), ([0, 1], [2, 3])
  for i in range(2):
    for j in range(2):
      ref = x[0][np.ix_(rows[i], cols[j])].mean((0, 1))
      np.testing.assert_allclose(got[0, i, j], ref, rtol=1e-6)


def test_segment_pool_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 3)).astype(np.float32)
  ids = np.array([[-1, 0, 0, 1, 1, 1, -1], [-1, 0, 2, 2, -1, -1, -1]])
  for kind in ("max", "mean"):
    got, present = common.segment_pool(jnp.asarray(x), jnp.asarray(ids), 4,
                                       kind)
    for b in range(2):
      for s in range(4):
        sel = x[b][ids[b] == s]
        if len(sel):
          ref = sel.max(0) if kind == "max" else sel.mean(0)
          np.testing.assert_allclose(got[b, s], ref, rtol=1e-6)
          assert present[b, s]
        else:
          assert not present[b, s] and np.all(got[b, s] == 0)
  with pytest.raises(ValueError, match="unknown pooling 'sum'"):
    common.segment_pool(jnp.asarray(x), jnp.asarray(ids), 4, "sum")


def _text(b=2, t=10):
  tokens = jnp.asarray(np.random.default_rng(5).integers(5, 40, (b, t)),
                       jnp.int32)
  mask = jnp.arange(t)[None, :] < jnp.array([[t], [6]])  # row 1 padded
  sids = jnp.array([[-1, 0, 0, 0, 1, 1, 2, 2, 2, -1],
                    [-1, 0, 0, 1, 1, -1, -1, -1, -1, -1]])
  return tokens, mask, sids


@pytest.mark.parametrize("pool", ["max", "mean", "attention"])
def test_bert_ignores_padding_and_pools_reports(pool):
  tokens, mask, sids = _text()
  m = bert.Bert(**TINY_BERT, global_pool=pool, pool_heads=2)
  v = _vars(m, tokens, mask, sids)
  other = tokens.at[1, 6:].set(7)  # change only padded positions
  out, out2 = jax.jit(lambda v: [m.apply(v, t, mask, sids)
                                 for t in (tokens, other)])(v)
  np.testing.assert_allclose(out2["words"][1, :6], out["words"][1, :6],
                             rtol=1e-5, atol=1e-6)
  for k in ("sentences", "global", "cls"):
    np.testing.assert_allclose(out2[k], out[k], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["sentence_mask"],
                                [[1, 1, 1], [1, 1, 0]])
  words = np.asarray(out["words"], np.float64)
  body = np.asarray(mask).copy()
  body[:, 0] = False
  for b in range(2):
    ref = {"max": words[b][body[b]].max(0),
           "mean": words[b][body[b]].mean(0)}.get(pool)
    if ref is not None:
      np.testing.assert_allclose(out["global"][b], ref, rtol=1e-5,
                                 atol=1e-6)
  if pool == "attention":
    np.testing.assert_allclose(out["global_weights"].sum(-1), 1, rtol=1e-5)
    assert np.all(np.asarray(out["global_weights"])[~body] == 0)


def test_bert_errors():
  tokens, mask, sids = _text(t=10)
  with pytest.raises(ValueError, match="13 tokens exceed max_len=12"):
    _vars(bert.Bert(**TINY_BERT), jnp.zeros((1, 13), jnp.int32),
          jnp.ones((1, 13), bool))
  with pytest.raises(ValueError, match="unknown global_pool 'first'"):
    _vars(bert.Bert(**TINY_BERT, global_pool="first"), tokens, mask)


def test_dan_word_dropout_only_in_training():
  m = dan.DAN(vocab_size=20, embed_dim=8, hidden=(8,), word_dropout=0.5)
  t = jnp.arange(12).reshape(1, 12) % 20
  mask = jnp.ones((1, 12), bool)
  v = m.init(RNGS, t, mask)
  a = m.apply(v, t, mask)["global"]
  np.testing.assert_array_equal(a, m.apply(v, t, mask)["global"])
  b = m.apply(v, t, mask, train=True, rngs={"dropout": jax.random.PRNGKey(7)}
              )["global"]
  assert not np.allclose(a, b)
  # Eval: the mean of the kept embeddings, padding excluded.
  half = mask.at[:, 6:].set(False)
  e = np.asarray(v["params"]["embed"]["embedding"].value)[np.arange(6)]
  ref = np.maximum(e.mean(0) @ np.asarray(
      v["params"]["mlp_0"]["kernel"].value), 0)
  np.testing.assert_allclose(m.apply(v, t, half)["global"][0], ref,
                             rtol=1e-5, atol=1e-6)
