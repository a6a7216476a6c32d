"""Dataset schema, tokenizers and the tf.data -> jax.Array input pipeline."""
