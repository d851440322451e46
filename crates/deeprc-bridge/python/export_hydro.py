"""Exports the hydrology LSTM SavedModel that deeprc-bridge trains
data-parallel from Rust (deeprc_bridge::tensorflow::HydroGradientModel).

Usage: python export_hydro.py OUT_DIR [--seq-len 270] [--dyn 5] [--static 27]
           [--hidden 256] [--dropout 0.4] [--lr 1e-3] [--clip-norm 1.0]
           [--forget-bias 5.0] [--seed 0]

The model is the LSTM of Kratzert et al. (2019), "Towards learning universal,
regional, and local hydrological behaviors via machine learning applied to
large-sample datasets" (HESS 23, 5089-5110), in its "LSTM with static
inputs" form (their code: github.com/kratzert/ealstm_regional_modeling,
main.py with --concat_static):

  x_dyn    [B, T, F_dyn]      daily forcings (Daymet prcp, srad, tmax, tmin, vp)
  x_static [B, F_static]      catchment attributes, repeated at every step
  x = concat(x_dyn, x_static) [B, T, I]        I = F_dyn + F_static
  h_T = LSTM(x)[:, -1]        [B, H]           zero initial state
  y = dropout(h_T) @ W + b    [B, 1]           streamflow of day T

with their defaults: T = 270, H = 256, dropout 0.4 (on h_T only), forget
gate bias initialised to 5, Adam lr 1e-3, gradient norm clipped to 1.

LSTM cell (their papercode/lstm.py layout; the tch twin
deeprc_models::hydro::HydroLstm uses the same):
  gates = x_t @ weight_ih + h @ weight_hh + bias      [B, 4H]
  f, i, o, g = split(gates, 4)                        (this order)
  c = sigmoid(f) * c + sigmoid(i) * tanh(g);  h = sigmoid(o) * tanh(c)
Initialisation: weight_ih orthogonal, weight_hh = [I_H I_H I_H I_H], bias 0
except the forget block (= --forget-bias); the head as PyTorch's nn.Linear
(uniform in +-1/sqrt(H)).

Flat parameter vector (P floats; all trainable variables in this order,
each row-major):
  lstm/weight_ih [I, 4H] | lstm/weight_hh [H, 4H] | lstm/bias [4H]
  | head/weight [H, 1] | head/bias [1]
  P = 4H (I + H + 1) + H + 1    (296193 with the defaults)

Signatures (batch dimension dynamic; every one callable through the C API):
  gradients(x_dyn, x_static, y [B,1])  -> {loss: f32 [], grads: f32 [P]}
      MSE over the batch, dropout on; no step.
  nse_gradients(x_dyn, x_static, y, q_std [B,1]) -> {loss, grads}
      NSE* (Kratzert 2019, eq. 4): mean((y_hat - y)^2 / (q_std + 0.1)^2),
      q_std the standard deviation of the discharge of each sample's basin.
  apply_gradients(grads f32 [P]) -> {step: i64 []}
      clips to global norm --clip-norm (0: no clipping), one Adam step;
      the optimizer's step count after it.
  predict(x_dyn, x_static) -> {y: f32 [B, 1]}        dropout off
  get_weights() -> {weights: f32 [P]}
  set_weights(weights f32 [P]) -> {ok: bool []}     (Adam state untouched)
  set_learning_rate(lr f32 []) -> {lr: f32 []}      (Kratzert's schedule)
  num_params() -> {n: i64 []}
  config() -> {seq_len, dyn_features, static_features, hidden: i64 [];
               dropout, learning_rate, clip_norm, forget_bias: f32 []}

Averaging the `gradients` of equal shards of a batch gives the gradient of
the whole batch (mean losses), so ranks that all-reduce (mean) their grads
and apply them stay identical. Written atomically (a temporary directory
renamed into place); writes nothing else.
"""

import argparse
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

NSE_EPS = 0.1


class HydroLstm(tf.Module):
    def __init__(self, a):
        super().__init__(name="hydro_lstm")
        tf.random.set_seed(a.seed)
        self.cfg = a
        self.seq_len, self.n_dyn, self.n_static = a.seq_len, a.dyn, a.static
        self.hidden, self.dropout = a.hidden, a.dropout
        n_in, h = a.dyn + a.static, a.hidden
        orth = tf.keras.initializers.Orthogonal(seed=a.seed)
        self.weight_ih = tf.Variable(orth((n_in, 4 * h)), name="lstm_weight_ih")
        self.weight_hh = tf.Variable(tf.tile(tf.eye(h), [1, 4]), name="lstm_weight_hh")
        bias = tf.concat([tf.fill([h], float(a.forget_bias)), tf.zeros([3 * h])], 0)
        self.bias = tf.Variable(bias, name="lstm_bias")
        bound = 1.0 / float(h) ** 0.5
        uni = tf.keras.initializers.RandomUniform(-bound, bound, seed=a.seed + 1)
        self.head_w = tf.Variable(uni((h, 1)), name="head_weight")
        uni_b = tf.keras.initializers.RandomUniform(-bound, bound, seed=a.seed + 2)
        self.head_b = tf.Variable(uni_b((1,)), name="head_bias")
        self.params = [self.weight_ih, self.weight_hh, self.bias, self.head_w, self.head_b]
        self.sizes = [int(tf.size(v)) for v in self.params]
        self.n_params = sum(self.sizes)
        self.opt = tf.keras.optimizers.Adam(learning_rate=a.lr)
        # Build the optimizer's slots now so that they are saved variables.
        self.opt.build(self.params)

    def forward(self, x_dyn, x_static, training):
        b = tf.shape(x_dyn)[0]
        t = self.seq_len
        stat = tf.tile(x_static[:, None, :], [1, t, 1])
        x = tf.concat([x_dyn, stat], axis=2)  # [B, T, I]
        # Time-major steps read through a TensorArray and projected one day
        # at a time, as Keras' LSTM does. Slicing a [T, B, 4H] projection of
        # all days (xw[step]) made the backward pass O(T^2): the gradient of
        # each slice is a dense [T, B, 4H] tensor (8x slower at T = 240),
        # and the projection itself moved 283 MB at the paper's size.
        # Predictions matched the old export's to the bit (T = 30 and 270).
        x_steps = tf.TensorArray(x.dtype, size=t, element_shape=[None, x.shape[2]])
        x_steps = x_steps.unstack(tf.transpose(x, [1, 0, 2]))  # [T][B, I]
        hsz = self.hidden
        h = tf.zeros([b, hsz])
        c = tf.zeros([b, hsz])
        for step in tf.range(t):
            xw = tf.matmul(x_steps.read(step), self.weight_ih) + self.bias
            gates = xw + tf.matmul(h, self.weight_hh)
            f, i, o, g = tf.split(gates, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
        if training and self.dropout > 0:
            h = tf.nn.dropout(h, rate=self.dropout)
        return tf.matmul(h, self.head_w) + self.head_b

    def flat(self, tensors):
        return tf.concat([tf.reshape(v, [-1]) for v in tensors], 0)

    def unflat(self, flat):
        parts = tf.split(flat, self.sizes)
        return [tf.reshape(p, v.shape) for p, v in zip(parts, self.params)]


def export(a):
    m = HydroLstm(a)
    f32, i64 = tf.float32, tf.int64
    s_dyn = tf.TensorSpec([None, a.seq_len, a.dyn], f32, name="x_dyn")
    s_static = tf.TensorSpec([None, a.static], f32, name="x_static")
    s_y = tf.TensorSpec([None, 1], f32, name="y")
    s_q = tf.TensorSpec([None, 1], f32, name="q_std")
    s_grads = tf.TensorSpec([m.n_params], f32, name="grads")
    s_weights = tf.TensorSpec([m.n_params], f32, name="weights")
    s_lr = tf.TensorSpec([], f32, name="lr")

    def grads_of(loss_fn):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, m.params)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, m.params)]
        return {"loss": loss, "grads": m.flat(grads)}

    @tf.function(input_signature=[s_dyn, s_static, s_y])
    def gradients(x_dyn, x_static, y):
        return grads_of(
            lambda: tf.reduce_mean(tf.square(m.forward(x_dyn, x_static, True) - y))
        )

    @tf.function(input_signature=[s_dyn, s_static, s_y, s_q])
    def nse_gradients(x_dyn, x_static, y, q_std):
        def loss():
            err = tf.square(m.forward(x_dyn, x_static, True) - y)
            return tf.reduce_mean(err / tf.square(q_std + NSE_EPS))

        return grads_of(loss)

    @tf.function(input_signature=[s_grads])
    def apply_gradients(grads):
        gs = m.unflat(grads)
        if a.clip_norm > 0:
            gs, _ = tf.clip_by_global_norm(gs, a.clip_norm)
        m.opt.apply_gradients(zip(gs, m.params))
        return {"step": tf.identity(m.opt.iterations)}

    @tf.function(input_signature=[s_dyn, s_static])
    def predict(x_dyn, x_static):
        return {"y": m.forward(x_dyn, x_static, False)}

    @tf.function(input_signature=[])
    def get_weights():
        return {"weights": m.flat(m.params)}

    @tf.function(input_signature=[s_weights])
    def set_weights(weights):
        for v, w in zip(m.params, m.unflat(weights)):
            v.assign(w)
        return {"ok": tf.constant(True)}

    @tf.function(input_signature=[s_lr])
    def set_learning_rate(lr):
        m.opt.learning_rate.assign(lr)
        return {"lr": tf.identity(m.opt.learning_rate)}

    @tf.function(input_signature=[])
    def num_params():
        return {"n": tf.constant(m.n_params, i64)}

    @tf.function(input_signature=[])
    def config():
        i = lambda v: tf.constant(v, i64)  # noqa: E731
        f = lambda v: tf.constant(v, f32)  # noqa: E731
        return {
            "seq_len": i(a.seq_len),
            "dyn_features": i(a.dyn),
            "static_features": i(a.static),
            "hidden": i(a.hidden),
            "dropout": f(a.dropout),
            "learning_rate": tf.identity(m.opt.learning_rate),
            "clip_norm": f(a.clip_norm),
            "forget_bias": f(a.forget_bias),
        }

    sigs = {
        "gradients": gradients,
        "nse_gradients": nse_gradients,
        "apply_gradients": apply_gradients,
        "predict": predict,
        "get_weights": get_weights,
        "set_weights": set_weights,
        "set_learning_rate": set_learning_rate,
        "num_params": num_params,
        "config": config,
    }
    for k, fn in sigs.items():
        setattr(m, "sig_" + k, fn)
    out_dir = os.path.abspath(a.out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{out_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(m, tmp, signatures=sigs)
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # Another export of the same directory won the race.
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(os.path.join(out_dir, "saved_model.pb")):
            raise
    print(
        f"export_hydro: wrote {out_dir} (x_dyn [B,{a.seq_len},{a.dyn}], "
        f"x_static [B,{a.static}] -> y [B,1]; hidden {a.hidden}, dropout "
        f"{a.dropout}, lr {a.lr}, clip {a.clip_norm}; {m.n_params} parameters)"
    )


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--seq-len", type=int, default=270, help="days per sample (T)")
    p.add_argument("--dyn", type=int, default=5, help="dynamic features (forcings)")
    p.add_argument("--static", type=int, default=27, help="static attributes (0: none)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=1.0, help="0: no clipping")
    p.add_argument("--forget-bias", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("seq_len", "dyn", "hidden"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.static < 0:
        p.error("--static must be at least 0")
    if not 0.0 <= a.dropout < 1.0:
        p.error("--dropout must be in [0, 1)")
    if a.lr <= 0 or a.clip_norm < 0:
        p.error("--lr must be positive and --clip-norm non-negative")
    export(a)


if __name__ == "__main__":
    main(sys.argv[1:])
