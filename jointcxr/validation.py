"""Validation loss during training (LoVT early-stops on `val/total_loss`).

`make_step` jits the method's objective in eval mode; `run` evaluates it
on the first `config.val.batches` global batches of `config.val.split`
(the eval pipeline: no augmentation, the first image of each study,
padded rows masked) and returns `val/...` means: `val/loss`, every scalar
the objective logs (`val/loss/global_over_lnB`, `val/sim/pos`, ...) and the
embedding statistics of the validation embeddings (`val/health/...`). The
trainer (`jointcxr.train`) feeds `val/<early_stopping.metric>` to its early
stopping and best-checkpoint selection.

Reports enter whole (the eval pipeline has no text augmentation), also for
configs that train on one random sentence per report (ConVIRT, CLIP*): the
loss is then measured slightly off the training distribution, but on the
same inputs at every validation, which is what early stopping compares.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jointcxr import accumulate
from jointcxr import objectives
from jointcxr import sharding
from jointcxr.data import pipeline
from jointcxr.evaluators import embedding_stats


def make_step(config, model, mesh, shardings):
  """Jitted validation step: the method's objective in eval mode.

  The same loss as training on a full global batch (so the InfoNCE terms
  see B candidates and `loss/global_over_lnB` compares with training's),
  but no dropout, BatchNorm on its running statistics, padded rows masked
  out, and a fixed key for JoImTeRNet's random negatives (every validation
  draws the same ones, so values are comparable across validations).
  Accumulated configs forward `accum_steps` micro-batches at a time.
  Returns replicated scalars: `loss`, the objective's aux, the embedding
  statistics (`health/...`) and `count` (real rows).
  """
  method, k = config.method, max(1, config.accum_steps)
  loss_cfg = config.loss.to_dict()
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2**31 - 1)

  def val_step(variables, batch):
    if not variables["batch_stats"]:
      variables = {"params": variables["params"]}
    out = accumulate.micro_forward(
        lambda b: model.apply(variables, b, train=False), batch, k)
    loss, aux = objectives.compute(method, loss_cfg, out, batch, rng=key,
                                   mesh=mesh)
    mask = batch["mask"]
    return {"loss": loss,
            **{k_: v for k_, v in aux.items() if jnp.ndim(v) == 0},
            **embedding_stats.tower_stats(out["img_global"],
                                          out["txt_global"], mask),
            "count": jnp.sum(mask.astype(jnp.float32))}

  var_shardings = {"params": shardings["params"],
                   "batch_stats": shardings["batch_stats"]}
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(val_step, in_shardings=(var_shardings,
                                         sharding.batch_sharding(mesh)),
                 out_shardings=rep)


def run(config, val_step, state, tok, mesh) -> dict:
  """`val/...`: the validation objective over `config.val.batches` batches.

  Every value is the mean over batches weighted by their real rows (a
  short last batch counts less); a statistic that is undefined for a
  batch (NaN, e.g. uniformity of one row) leaves that batch out of its
  mean. The eval pipeline reads the same first examples each time, without
  augmentation, so successive validations are comparable.
  """
  v, inp = config.val, config.input
  it = pipeline.eval_iterator(
      inp.data_dir, split=v.split, global_batch_size=config.batch_size,
      tokenizer=tok, image_size=inp.image_size, max_tokens=inp.max_tokens,
      max_sentences=inp.max_sentences, mesh=mesh,
      data_axis=sharding.batch_axes(mesh), mean=inp.mean, std=inp.std,
      limit=v.batches * config.batch_size if v.batches else None,
      prefetch=inp.prefetch)
  sums, weights = {}, {}
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  try:
    for batch in it:
      m = jax.device_get(val_step(variables, batch))
      n = float(m.pop("count"))
      for name, value in m.items():
        value = float(value)
        if n > 0 and np.isfinite(value):
          sums[name] = sums.get(name, 0.0) + n * value
          weights[name] = weights.get(name, 0.0) + n
  finally:
    it.close()
  out = {f"val/{k}": sums[k] / weights[k] for k in sums}
  out["val/examples"] = float(it.num_examples)
  return out
