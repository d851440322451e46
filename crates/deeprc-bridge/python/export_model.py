"""Exports the TensorFlow SavedModel that deeprc-bridge trains from Rust.

Usage: python export_model.py OUT_DIR [--in-len 96] [--features 7]
                                      [--horizon 24] [--targets 1]

A small MLP forecaster: x [batch, in_len, features] -> y [batch, horizon,
targets]. The SavedModel has three signatures, each callable from the C API
(and so from the `tensorflow` crate) with a dynamic batch size:

  train(x, y)   one Adam step on the mean squared error; returns {"loss"}
  predict(x)    returns {"y"}
  loss(x, y)    the loss without a step (validation); returns {"loss"}

The weights are variables of the SavedModel, so a Rust program that loads
it, runs `train` a few times and then `predict` sees the trained model.
Run by scripts/setup-ml.sh with the project's venv; writes nothing else.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


class Forecaster(tf.Module):
    def __init__(self, in_len, features, horizon, targets, hidden=64):
        super().__init__()
        tf.random.set_seed(0)
        self.horizon, self.targets = horizon, targets
        n_in = in_len * features
        init = tf.keras.initializers.GlorotUniform(seed=0)
        self.w1 = tf.Variable(init((n_in, hidden)), name="w1")
        self.b1 = tf.Variable(tf.zeros((hidden,)), name="b1")
        self.w2 = tf.Variable(init((hidden, horizon * targets)), name="w2")
        self.b2 = tf.Variable(tf.zeros((horizon * targets,)), name="b2")
        self.opt = tf.keras.optimizers.Adam(learning_rate=1e-3)
        self.spec_x = tf.TensorSpec([None, in_len, features], tf.float32, name="x")
        self.spec_y = tf.TensorSpec([None, horizon, targets], tf.float32, name="y")
        # Build the optimizer's slots now so that they are saved variables.
        self.opt.build(self.trainable_variables)

    def forward(self, x):
        b = tf.shape(x)[0]
        h = tf.nn.relu(tf.matmul(tf.reshape(x, [b, -1]), self.w1) + self.b1)
        out = tf.matmul(h, self.w2) + self.b2
        return tf.reshape(out, [b, self.horizon, self.targets])


def export(out_dir, in_len, features, horizon, targets):
    m = Forecaster(in_len, features, horizon, targets)

    @tf.function(input_signature=[m.spec_x, m.spec_y])
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(m.forward(x) - y))
        variables = [m.w1, m.b1, m.w2, m.b2]
        m.opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}

    @tf.function(input_signature=[m.spec_x, m.spec_y])
    def loss(x, y):
        return {"loss": tf.reduce_mean(tf.square(m.forward(x) - y))}

    @tf.function(input_signature=[m.spec_x])
    def predict(x):
        return {"y": m.forward(x)}

    m.train, m.loss_fn, m.predict = train, loss, predict
    tmp = out_dir + ".tmp"
    tf.saved_model.save(
        m, tmp, signatures={"train": train, "loss": loss, "predict": predict}
    )
    if os.path.exists(out_dir):
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    print(
        f"export_model: wrote {out_dir} (x [B,{in_len},{features}] -> "
        f"y [B,{horizon},{targets}]; signatures train, loss, predict)"
    )


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--in-len", type=int, default=96)
    p.add_argument("--features", type=int, default=7)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--targets", type=int, default=1)
    a = p.parse_args(argv)
    export(a.out_dir, a.in_len, a.features, a.horizon, a.targets)


if __name__ == "__main__":
    main(sys.argv[1:])
