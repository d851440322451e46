"""Keras `fit` of the hydrology LSTM, timed one training step at a time.

The Keras counterpart of the TensorFlow SavedModel that Deep RC trains from
Rust (crates/deeprc-bridge/python/export_hydro.py, timed through
deeprc_bridge::tensorflow::HydroGradientModel by
benches/src/bin/train_speed.rs, which runs this script with the project
venv's Python and reads the JSON object it prints on stdout).

Same architecture and parameter count as the SavedModel: x_dyn [B, T, F_dyn]
and x_static [B, F_static] repeated at every day, concatenated, one LSTM of
H cells (Kratzert et al.'s initialisation: orthogonal input weights, identity
recurrent blocks, forget bias 5), dropout on h_T, Dense(1); MSE; Adam
(lr 1e-3) with the gradients clipped to global norm 1, as the SavedModel's
apply_gradients does. keras.layers.LSTM has one bias vector, so its
parameter count, 4H (I + H + 1) + H + 1, is the SavedModel's.

One `fit` of warmup + steps batches of random data (shuffle off, no XLA);
a callback times every batch from on_train_batch_begin to
on_train_batch_end; the warm-up batches (the first traces the graph) are
dropped. Thread pools: TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS and
tf.config.threading, both set to --threads before any op runs.

Usage: python keras_speed.py --threads K [--warmup 2] [--steps 10]
           [--batch 256] [--seq-len 270] [--dyn 5] [--static 12] [--hidden 256]
"""

import argparse
import json
import os
import sys
import time


def mapped(needle):
    """The file this process mapped whose name contains needle."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and needle in parts[5]:
                return parts[5]
    return ""


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=270)
    p.add_argument("--dyn", type=int, default=5)
    p.add_argument("--static", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.4)
    p.add_argument("--forget-bias", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=1.0)
    a = p.parse_args(argv)

    os.environ["TF_NUM_INTRAOP_THREADS"] = str(a.threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(a.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    tf.keras.utils.set_random_seed(a.seed)
    keras, layers = tf.keras, tf.keras.layers

    t, h = a.seq_len, a.hidden

    def forget_bias(shape, dtype=None):
        return tf.concat([tf.fill([h], a.forget_bias), tf.zeros([shape[0] - h])], 0)

    def identity_blocks(shape, dtype=None):
        return tf.tile(tf.eye(h), [1, 4])

    x_dyn = keras.Input((t, a.dyn), name="x_dyn")
    inputs = [x_dyn]
    x = x_dyn
    if a.static > 0:
        x_static = keras.Input((a.static,), name="x_static")
        inputs.append(x_static)
        x = layers.Concatenate(axis=2)([x_dyn, layers.RepeatVector(t)(x_static)])
    last = layers.LSTM(
        h,
        kernel_initializer=keras.initializers.Orthogonal(seed=a.seed),
        recurrent_initializer=identity_blocks,
        bias_initializer=forget_bias,
        unit_forget_bias=False,
    )(x)
    y = layers.Dense(1)(layers.Dropout(a.dropout)(last))
    model = keras.Model(inputs, y)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=a.lr, global_clipnorm=a.clip_norm or None),
        loss="mse",
        jit_compile=False,
    )

    n = a.batch * (a.warmup + a.steps)
    rng = np.random.default_rng(a.seed)
    data = [rng.standard_normal((n, t, a.dyn), dtype=np.float32)]
    if a.static > 0:
        data.append(rng.standard_normal((n, a.static), dtype=np.float32))
    target = rng.standard_normal((n, 1), dtype=np.float32)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ms, self.t0 = [], 0.0
            self.cpu0 = self.wall0 = self.cpu1 = self.wall1 = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            if batch == a.warmup:
                self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.ms.append((now - self.t0) * 1e3)
            self.cpu1, self.wall1 = time.process_time(), now

    timer = Timer()
    hist = model.fit(
        data,
        target,
        batch_size=a.batch,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    cpu, wall = timer.cpu1 - timer.cpu0, timer.wall1 - timer.wall0
    json.dump(
        {
            "side": "keras",
            "case": "hydro_tf",
            "params": int(model.count_params()),
            "threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "interop_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "ms": timer.ms[a.warmup :],
            "cpu_s": cpu,
            "wall_s": wall,
            "loss": float(hist.history["loss"][-1]),
            "tf_version": tf.__version__,
            "tf_file": tf.__file__,
            "tf_mapped": mapped("libtensorflow_framework"),
            "keras_version": __import__("keras").__version__,
            "python": sys.version.split()[0],
            "optimizer": f"keras Adam(lr={a.lr}, global_clipnorm={a.clip_norm})",
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
