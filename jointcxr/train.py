r"""The trainer: every seed method from its config, one CPU to a TPU pod.

    python -m jointcxr.train --config=configs/lovt.py:tiny --workdir=W \
        --config.input.data_dir=D [--config.x=y ...]

On a pod, run the same command on every host with JOINTCXR_DISTRIBUTED=1
(or --coordinator_address/--num_processes/--process_id): each process feeds
its share of the global batch, only process 0 writes. Work is never lost:
checkpoints are async and regular, SIGTERM saves and exits cleanly, and a
restart in the same workdir continues exactly (input position and RNG are
part of the checkpoint).

Training health (README): every log step records both towers' embedding
statistics, sim/pos vs sim/neg and the global loss over ln(B), and warns
when that stays at chance; with `config.val`, the validation loss drives
early stopping (`config.early_stopping`) and a best checkpoint.
"""

import json
import os
import signal
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from jointcxr import accumulate
from jointcxr import checkpointing
from jointcxr import config_validation
from jointcxr import health
from jointcxr import loading
from jointcxr import logging_setup
from jointcxr import objectives
from jointcxr import optim
from jointcxr import sharding
from jointcxr import validation
from jointcxr.data import augment as augment_lib
from jointcxr.data import pipeline
from jointcxr.data import tokenizer as tok_lib
from jointcxr.evaluators import embedding_stats
from jointcxr.models import factory
from jointcxr.models import two_towers

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program, so the
  library functions here can be imported next to other binaries)."""
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 "
                      "(multi-host).")
  flags.DEFINE_integer("num_processes", None, "Processes (multi-host).")
  flags.DEFINE_integer("process_id", None, "This process (multi-host).")

jax.config.update("jax_threefry_partitionable", True)


class TrainingDiverged(RuntimeError):
  """A non-finite loss or gradient under nan_policy="stop"."""


# ----------------------------------------------------------------- setup ---
def get_tokenizer(config, workdir: str):
  """The configured tokenizer, or one trained on the train split."""
  if config.input.tokenizer:
    return tok_lib.load_tokenizer(config.input.tokenizer)
  path = tok_lib.run_tokenizer_path(config, workdir)
  if jax.process_index() == 0 and not os.path.exists(path):
    from data_prep import tokenizer as train_tok  # pylint: disable=g-import-not-at-top
    logging.info("training a %d-piece SentencePiece tokenizer on %s",
                 config.input.vocab_size, config.input.data_dir)
    model = train_tok.train_sentencepiece(
        train_tok.read_sentences(config.input.data_dir),
        config.input.vocab_size)
    with open(path + ".tmp", "wb") as f:
      f.write(model)
    os.replace(path + ".tmp", path)
  multihost_utils.sync_global_devices("tokenizer")
  return tok_lib.load_tokenizer(path)


def dummy_batch(config, n: int = 2) -> dict:
  s, t = config.input.image_size, config.input.max_tokens
  sids = np.full((n, t), -1, np.int32)
  sids[:, 1:min(4, t - 1)] = 0
  return {"image": np.zeros((n, s, s, 1), np.float32),
          "tokens": np.ones((n, t), np.int32),
          "text_mask": np.ones((n, t), bool), "sentence_ids": sids}


def mesh_rules(config, mesh) -> list:
  """The config's logical-axis rules restricted to axes this mesh has."""
  return sharding.logical_rules(config.logical_axis_rules, mesh)


def init_state(config, model, opt: optim.Optimizer, mesh, rng):
  """Abstract shapes, shardings, then the real init directly sharded."""
  batch = dummy_batch(config)

  def init_boxed(rng):
    p_rng, d_rng = jax.random.split(rng)
    return model.init({"params": p_rng, "dropout": d_rng}, batch,
                      train=False)

  def init(rng):
    variables = nn.meta.unbox(init_boxed(rng))
    params = variables["params"]
    return {"params": params,
            "batch_stats": variables.get("batch_stats", {}),
            "opt_state": opt.init(params),
            "step": jnp.zeros((), jnp.int32), "rng": rng,
            "nonfinite": jnp.zeros((), jnp.int32),
            "first_bad_step": jnp.full((), -1, jnp.int32)}

  rules = mesh_rules(config, mesh)
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(init_boxed, rng)
    abstract = jax.eval_shape(init, rng)
  pspec = sharding.param_specs(abstract["params"], config.sharding_rules,
                               mesh, rules, boxed["params"])
  specs = {"params": pspec,
           "batch_stats": jax.tree.map(lambda _: jax.sharding.PartitionSpec(),
                                       abstract["batch_stats"]),
           "opt_state": sharding.mirror_specs(abstract["opt_state"], pspec)}
  specs.update({k: jax.sharding.PartitionSpec() for k in
                ("step", "rng", "nonfinite", "first_bad_step")})
  shardings = sharding.to_shardings(specs, mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(init, out_shardings=shardings)(rng)
  return state, shardings


# ------------------------------------------------------------ the steps ---
# Keys of the step's global embeddings in the loss's aux (popped before
# logging).
_IMG, _TXT = "_health/img_global", "_health/txt_global"


def make_steps(config, model, opt: optim.Optimizer, mesh, shardings,
               tokenizer=None):
  """Jitted image-text step (and MLM step) with donation."""
  method, k = config.method, max(1, config.accum_steps)
  loss_cfg = config.loss.to_dict()
  debug_nan = config.debug_nan_step

  def apply_fn(params, bs, batch, rng):
    variables = {"params": params}
    if bs:
      variables["batch_stats"] = bs
    out, mut = model.apply(variables, batch, train=True,
                           rngs={"dropout": rng}, mutable=["batch_stats"])
    return out, mut.get("batch_stats", bs)

  def finish(state, loss, aux, grads, new_bs, step_groups=None):
    step = state["step"]
    if debug_nan >= 0:
      bad = step == debug_nan
      loss = jnp.where(bad, jnp.nan, loss)
      grads = jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grads)
    gnorm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
    if step_groups is None:
      updates, new_opt = opt.update(grads, state["opt_state"],
                                    state["params"])
    else:
      updates, new_opt = opt.update_groups(grads, state["opt_state"],
                                           state["params"], step_groups)
    new_params = optax.apply_updates(state["params"], updates)
    keep = lambda new, old: jax.tree.map(  # a non-finite step changes nothing
        lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = {
        "params": keep(new_params, state["params"]),
        "batch_stats": keep(new_bs, state["batch_stats"]),
        "opt_state": keep(new_opt, state["opt_state"]),
        "step": step + 1, "rng": state["rng"],
        "nonfinite": state["nonfinite"] + (~finite).astype(jnp.int32),
        "first_bad_step": jnp.where((~finite) & (state["first_bad_step"] < 0),
                                    step, state["first_bad_step"])}
    metrics = {"loss": loss, "grad_norm": gnorm,
               "param_norm": optax.global_norm(state["params"]),
               **{k_: v for k_, v in aux.items() if jnp.ndim(v) == 0},
               **opt.learning_rates(step)}
    return new_state, metrics

  log_every, total = config.log_every_steps, config.total_steps

  def health_stats(aux, mask, step):
    # Embedding statistics of the step's own global embeddings (B x D,
    # carried out of the loss in `aux`), only on steps whose metrics get
    # logged: the SVD is cheap but not free at B = D = 512, and the other
    # steps' values are never read.
    zi, zt = aux.pop(_IMG), aux.pop(_TXT)
    f = lambda: embedding_stats.tower_stats(zi, zt, mask)
    due = ((step + 1) % log_every == 0) | (step + 1 == total)
    skip = lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                                jax.eval_shape(f))
    return {**aux, **jax.lax.cond(due, f, skip)}

  def train_step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    r_drop, r_loss = jax.random.split(rng)

    def loss_fn(out, b):
      loss, aux = objectives.compute(method, loss_cfg, out, b, rng=r_loss,
                                     mesh=mesh)
      sg = jax.lax.stop_gradient
      return loss, {**aux, _IMG: sg(out["img_global"]),
                    _TXT: sg(out["txt_global"])}

    if k > 1:
      loss, aux, grads, new_bs = accumulate.accumulated_grads(
          apply_fn, loss_fn, state["params"], state["batch_stats"], batch, k,
          r_drop)
    else:
      def f(p):
        out, nbs = apply_fn(p, state["batch_stats"], batch, r_drop)
        l, a = loss_fn(out, batch)
        return l, (a, nbs)
      (loss, (aux, new_bs)), grads = jax.value_and_grad(f, has_aux=True)(
          state["params"])
    aux = health_stats(aux, batch.get("mask"), state["step"])
    return finish(state, loss, aux, grads, new_bs)

  text_groups = tuple(g["name"] for g in config.optim.groups
                      if "txt" in g["regex"]) or ("default",)

  # Special tokens are never MLM targets (WordPiece vocabularies put them
  # around id 100, SentencePiece ones at 0..4).
  mask_id = tokenizer.mask_id if tokenizer is not None else 4
  special_max = (max(tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id,
                     tokenizer.sep_id, tokenizer.mask_id) + 1
                 if tokenizer is not None else 5)

  def mlm_step(state, batch):
    from jointcxr import losses  # pylint: disable=g-import-not-at-top
    rng = jax.random.fold_in(state["rng"], state["step"])
    r_mask, r_drop = jax.random.split(rng)
    masked, targets, weights = losses.mlm_mask(
        r_mask, batch["tokens"], vocab_size=model.text["vocab_size"],
        mask_id=mask_id, special_max_id=special_max)

    def f(p):
      logits, mut = model.apply(
          {"params": p, "batch_stats": state["batch_stats"]}, masked,
          batch["text_mask"], train=True, rngs={"dropout": r_drop},
          mutable=["batch_stats"], method=two_towers.Model.mlm_logits)
      l, a = objectives.mlm_step(logits, targets, weights)
      return l, (a, mut.get("batch_stats", state["batch_stats"]))
    (loss, (aux, new_bs)), grads = jax.value_and_grad(f, has_aux=True)(
        state["params"])
    return finish(state, loss, aux, grads, new_bs, text_groups)

  data_sharding = sharding.batch_sharding(mesh)
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  jit = lambda fn: jax.jit(fn, in_shardings=(shardings, data_sharding),
                           out_shardings=(shardings, rep),
                           donate_argnums=(0,))
  return jit(train_step), jit(mlm_step)


# ------------------------------------------------------------- training ---
def _write_config(config, workdir):
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _flops(step_fn, state, batch, accum_steps: int = 1) -> float:
  """FLOPs of one step from XLA's cost analysis (0.0 when unavailable).

  XLA counts a `scan` body once, not once per iteration, so the
  accumulated step (two scans over the K micro-batches, accumulate.py)
  would report about 1/K of its work; the count is scaled by K. That
  includes GradCache's re-forward and over-counts the once-per-step loss
  and update by K, both small next to K forward/backward passes.
  """
  try:
    cost = step_fn.lower(state, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) * max(1, accum_steps)
  except Exception:  # cost analysis is best effort on some backends
    return 0.0


def compiled_barrier(name: str, timeout_s: int = 1800) -> None:
  """Waits (coordination service, not a collective) until every process
  gets here; a no-op with one process.

  Called after the first step is compiled: CPU (gloo) collectives give a
  peer only 30 s to join, and compile times differ between hosts.
  """
  if jax.process_count() > 1:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    distributed.global_state.client.wait_at_barrier(
        f"jointcxr_{name}", timeout_s * 1000)


def _check_finite(state, policy, last_saved):
  n, first = jax.device_get((state["nonfinite"], state["first_bad_step"]))
  if n and policy == "stop":
    raise TrainingDiverged(
        f"non-finite loss or gradient at step {int(first)} (nan_policy="
        f"stop); the update was not applied; last good checkpoint: "
        f"{'step ' + str(last_saved) if last_saved is not None else 'none'}")
  return int(n)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if a checkpoint is there)."""
  if config.method == "hsu":
    from jointcxr.hsu import train as hsu_train  # pylint: disable=g-import-not-at-top
    return hsu_train.train_and_evaluate(config, workdir)
  config_validation.check(config)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)

  # -- Mesh and logging --------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  if config.batch_size % sharding.data_parallelism(mesh):
    raise ValueError(f"batch_size {config.batch_size} must divide by the "
                     f"{sharding.data_parallelism(mesh)} batch shards of the "
                     f"mesh (axes {sharding.batch_axes(mesh)})")
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  logging.info("mesh %s, %d processes", dict(mesh.shape), jax.process_count())

  # -- Input ------------------------------------------------------------
  tok = get_tokenizer(config, workdir)
  inp = config.input
  it = pipeline.train_iterator(
      inp.data_dir, split=inp.split, global_batch_size=config.batch_size,
      tokenizer=tok, image_size=inp.image_size, max_tokens=inp.max_tokens,
      max_sentences=inp.max_sentences, image_aug=inp.image_aug,
      text_aug=inp.text_aug, view=inp.view, seed=config.seed, mesh=mesh,
      data_axis=sharding.batch_axes(mesh), prefetch=inp.prefetch,
      hflip=inp.hflip, mean=inp.mean, std=inp.std,
      shuffle_buffer=inp.shuffle_buffer,
      aug=augment_lib.Params.from_dict(inp.aug.to_dict()))
  steps_per_epoch = max(1, it.epoch_examples * jax.process_count() //
                        config.batch_size)

  # -- Model, optimizer, sharded state ------------------------------------
  model = factory.from_config(config, tok.vocab_size)
  rng = jax.random.PRNGKey(config.seed)
  params_shape = nn.meta.unbox(jax.eval_shape(
      lambda: model.init({"params": rng, "dropout": rng},
                         dummy_batch(config))))["params"]
  opt = optim.Optimizer(config.optim.to_dict(), params_shape,
                        config.total_steps, steps_per_epoch)
  state, shardings = init_state(config, model, opt, mesh, rng)

  # -- Checkpoints: workdir > config.resume > model_init > scratch --------
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    keep=config.keep_checkpoints,
                                    every=config.ckpt_every_steps)
  abstract = checkpointing.abstract_like(state)
  restored = ckpt.restore(abstract)
  if restored is None and config.resume:
    restored = checkpointing.Checkpointer(os.path.join(
        config.resume, "checkpoints"), async_save=False).restore(abstract)
  # Health monitor and early stopping: host state that travels in every
  # checkpoint's `data`, so a resumed run warns and stops where an
  # uninterrupted one does.
  monitor, stopping = health.from_config(config)
  last_saved = None
  if restored is not None:
    step0, state, data = restored
    it.restore_state(data["input"])
    monitor.restore(data.get("health"))
    stopping.restore(data.get("early_stopping"))
    last_saved = step0
    logging.info("resumed at step %d", step0)
  elif config.model_init:
    pre = loading.load_pretrained(config, sharding.host_value(
        {"params": state["params"], "batch_stats": state["batch_stats"]}))
    state = dict(state, **{k: jax.device_put(pre[k], shardings[k])
                           for k in ("params", "batch_stats")})
  if jax.process_index() == 0 and restored is None:
    # Names and shapes only: statistics would fetch parameters sharded over
    # other hosts' devices.
    parameter_overview.log_parameter_overview(state["params"],
                                              include_stats=False)
    writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()
                          if isinstance(v, (int, float, str, bool))})
  step = int(jax.device_get(state["step"]))
  host_data = lambda: {"input": it.state(), "health": monitor.state(),
                       "early_stopping": stopping.state()}

  # -- Validation loss, early stopping, best checkpoint -------------------
  val_every = config.val.every_steps
  val_every = steps_per_epoch if val_every < 0 else val_every
  if val_every:
    try:
      pipeline.open_split(inp.data_dir, config.val.split)
    except ValueError as e:
      _warn(f"validation loss, early stopping and best-checkpoint "
            f"selection are off: {e}")
      val_every = 0
  best_ckpt = None
  if val_every and config.val.keep_best:
    best_ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, checkpointing.BEST_DIR), keep=1, every=1)
    # Best states saved after the step this run starts from were never
    # part of its history (a crash before their checkpoint).
    best_ckpt.delete_after(step)

  rules = mesh_rules(config, mesh)
  train_step, mlm_step = make_steps(config, model, opt, mesh, shardings, tok)
  val_step = (validation.make_step(config, model, mesh, shardings)
              if val_every else None)
  stop = {"sigterm": False}
  signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
  hooks = [periodic_actions.ReportProgress(num_train_steps=config.total_steps,
                                           writer=writer)]
  flops = None
  t0, s0 = time.time(), step
  t_start, step_start = t0, step
  metrics = None
  try:
    with metric_writers.ensure_flushes(writer), jax.set_mesh(mesh), (
        nn.logical_axis_rules(rules)):
      while step < config.total_steps and not stopping.stopped:
        if stop["sigterm"] or ckpt.reached_preemption(step):
          logging.warning("preemption/SIGTERM at step %d: saving and exiting",
                          step)
          _check_finite(state, config.nan_policy, last_saved)
          ckpt.save(step, state, host_data(), force=True)
          ckpt.wait()
          return {"stopped_at": step}
        batch = next(it)
        use_mlm = config.mlm_prob > 0 and np.random.default_rng(
            [config.seed, step]).random() < config.mlm_prob
        fn = mlm_step if use_mlm else train_step
        if flops is None and not use_mlm:
          # Compiles the step (the call below reuses it), then lines the
          # processes up before its first collective.
          flops = _flops(train_step, state, batch, config.accum_steps)
          compiled_barrier(f"first_step_{step}")
        state, metrics = fn(state, batch)
        step += 1
        for h in hooks:
          h(step)
        if step % config.log_every_steps == 0 or step == config.total_steps:
          skipped = _check_finite(state, config.nan_policy, last_saved)
          m = {k: float(v) for k, v in jax.device_get(metrics).items()}
          dt = time.time() - t0
          rate = (step - s0) / max(dt, 1e-9)
          m.update({"steps_per_sec": rate, "examples_per_sec": rate *
                    config.batch_size, "flops_per_sec": rate * (flops or 0.0),
                    "epoch": step / steps_per_epoch, "skipped_steps": skipped})
          _log(writer, workdir, step, m)
          ratio = m.get("loss/global_over_lnB")
          if monitor.observe(step, ratio) and monitor.warned < 0:
            monitor.warned = step
            _warn(_chance_message(monitor, config))
          if jax.process_index() == 0:
            chance = "" if ratio is None else f" (global/ln B {ratio:.3f})"
            eta = (config.total_steps - step) / max(rate, 1e-9)
            print(f"step {step}/{config.total_steps} loss {m['loss']:.4f}"
                  f"{chance} {m['examples_per_sec']:.1f} ex/s, "
                  f"ETA {_clock(eta)}", flush=True)
          t0, s0 = time.time(), step
        # Validation comes before the checkpoint of the same step, so that
        # checkpoint records its outcome (a resume does not redo it).
        if val_every and (step % val_every == 0 or
                          step == config.total_steps):
          tv = time.time()
          _validate(config, val_step, state, tok, mesh, writer, workdir,
                    step, stopping, best_ckpt)
          t0 += time.time() - tv  # throughput is of training steps only
        if (step % config.ckpt_every_steps == 0 or step == config.total_steps
            or stopping.stopped):
          _check_finite(state, config.nan_policy, last_saved)
          if ckpt.save(step, state, host_data(),
                       force=step == config.total_steps or stopping.stopped):
            last_saved = step
        if config.eval_every_steps and step % config.eval_every_steps == 0:
          run_evals(config, model, state, tok, mesh, writer, step, workdir)
      _check_finite(state, config.nan_policy, last_saved)
      if last_saved != step:  # always leave a checkpoint of the final state
        ckpt.save(step, state, host_data(), force=True)
      it.close()  # no input is read after this: stop preparing batches
      if monitor.stuck():  # the end of the log is what gets read
        _warn("at the end of training: " + _chance_message(monitor, config))
      results = run_evals(config, model, state, tok, mesh, writer, step,
                          workdir)
  finally:
    # Everything that runs threads stops here, in order, never at
    # interpreter exit (RELIABILITY.md, "exit"): the input's prefetch
    # thread (joined), then pending async saves (complete even when the
    # run stops on an error), then the metric writer's queue and files.
    it.close()
    ckpt.close()
    if best_ckpt is not None:
      best_ckpt.close()
    writer.close()
  multihost_utils.sync_global_devices("train_end")
  final = {"step": step, **results,
           "health/chance_warning_step": monitor.warned}
  if val_every:
    final.update({"early_stopping/best": stopping.best,
                  "early_stopping/best_step": stopping.best_step,
                  "early_stopping/stopped_step": stopping.stopped_step})
  if metrics is not None:
    final["loss"] = float(jax.device_get(metrics["loss"]))
  if jax.process_index() == 0:
    print(_summary(final, step - step_start, time.time() - t_start),
          flush=True)
  return final


def _clock(seconds: float) -> str:
  """Seconds as m:ss (h:mm:ss past an hour), for progress lines."""
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _summary(final: dict[str, Any], steps: int, seconds: float) -> str:
  """The one line a finished run prints: steps, time, loss, best val."""
  parts = [f"trained {steps} steps in {_clock(seconds)}"]
  if "loss" in final:
    parts.append(f"final loss {final['loss']:.4f}")
  if final.get("early_stopping/best_step", -1) >= 0:
    parts.append(f"best val {final['early_stopping/best']:.4f} at step "
                 f"{final['early_stopping/best_step']}")
  if final.get("early_stopping/stopped_step", -1) >= 0:
    parts.append(f"early-stopped at {final['early_stopping/stopped_step']}")
  if final.get("health/chance_warning_step", -1) >= 0:
    parts.append("loss stuck near chance (see the warning above)")
  return "done: " + ", ".join(parts)


def _warn(msg: str) -> None:
  """A training-health warning: the log, and a line on process 0's stdout."""
  logging.warning("%s", msg)
  if jax.process_index() == 0:
    print(f"WARNING: {msg}", flush=True)


def _chance_message(monitor: health.ChanceMonitor, config) -> str:
  return health.chance_message(monitor.history, window=monitor.window,
                               tol=monitor.tol, batch_size=config.batch_size)


def _log(writer, workdir: str, step: int, m: dict) -> None:
  """Scalars to the clu writer and (process 0) a `metrics.jsonl` row."""
  writer.write_scalars(step, m)
  if jax.process_index() == 0:
    # Plain-JSON metrics too, for plots and scripts (TensorBoard has the
    # same numbers).
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": step, **m}) + "\n")


def _validate(config, val_step, state, tok, mesh, writer, workdir, step,
              stopping: health.EarlyStopping, best_ckpt) -> dict:
  """Validation loss, the early-stopping update and the best checkpoint.

  Every process computes the same replicated values and so takes the same
  decisions; all of them take part in the (collective) best save.
  """
  es = config.early_stopping
  vm = validation.run(config, val_step, state, tok, mesh)
  if es.metric not in vm:
    raise ValueError(f"early_stopping.metric {es.metric!r} is not a "
                     f"validation value; have {sorted(vm)}")
  if stopping.update(step, vm[es.metric]) and best_ckpt is not None:
    best_ckpt.save(step, {"params": state["params"],
                          "batch_stats": state["batch_stats"],
                          "step": state["step"]},
                   {"metric": es.metric, "value": vm[es.metric],
                    "step": step}, force=True)
  # NaN (not None) before a first finite value: scalar writers need floats.
  best = float("nan") if stopping.best is None else stopping.best
  vm.update({"early_stopping/best": best,
             "early_stopping/best_step": float(stopping.best_step),
             "early_stopping/bad_count": float(stopping.bad_count)})
  _log(writer, workdir, step, vm)
  if jax.process_index() == 0:
    ratio = vm.get("val/loss/global_over_lnB")
    chance = "" if ratio is None else f" (global/ln B {ratio:.3f})"
    of = f" of {es.patience}" if es.patience else ""
    print(f"step {step} val/loss {vm['val/loss']:.4f}{chance}; "
          f"{es.metric} best {best:.4f} at step {stopping.best_step} "
          f"({stopping.bad_count}{of} without improvement)", flush=True)
  if stopping.stopped:
    _warn(f"early stopping at step {step}: {es.metric} has not improved "
          f"by more than {es.min_delta:g} for {stopping.bad_count} "
          f"validations (best {best:.6g} at step {stopping.best_step}"
          f"{'; load it with checkpoint=best' if best_ckpt else ''})")
  return vm


def run_evals(config, model, state, tok, mesh, writer, step, workdir) -> dict:
  """In-training evaluators (the eval binaries' modules), process 0 writes."""
  from jointcxr.evaluators import common as eval_common  # pylint: disable=g-import-not-at-top
  results = eval_common.run_in_training(config, model, state, tok, mesh)
  if results:
    writer.write_scalars(step, results)
  return results


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def main(argv):
  del argv
  logging_setup.setup()
  if FLAGS.workdir is None or FLAGS.config is None:
    print("error: --config and --workdir are required", file=sys.stderr)
    sys.exit(2)
  distributed = bool(FLAGS.coordinator_address or os.environ.get(
      "JOINTCXR_DISTRIBUTED") == "1")
  if distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  try:
    result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (TrainingDiverged, checkpointing.CheckpointError, ValueError,
          FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if jax.process_index() == 0:
    print(json.dumps({k: v for k, v in result.items()
                      if isinstance(v, (int, float, str))}, sort_keys=True),
          flush=True)
  if distributed:  # after every collective and save, before exit
    jax.distributed.shutdown()


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=config_validation.parse_flags)
