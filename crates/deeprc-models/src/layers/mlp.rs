//! Multilayer perceptrons shared by the MLP-family forecasters.
//!
//! - [`ReluMlp`]: `Linear -> ReLU (-> Dropout)` hidden layers and a linear
//!   output layer (NeuralForecast's MLP, the fully connected stacks of the
//!   NBEATS and NHITS blocks).
//! - [`ResidualBlock`]: TiDE's residual block (Das et al. 2023):
//!   `Dropout(Linear(ReLU(Linear(x)))) + Linear_skip(x)`, then an optional
//!   layer norm.
//!
//! Parameter names under the given path: `hidden_{i}/{weight,bias}` and
//! `out/{weight,bias}` for [`ReluMlp`]; `dense_in`, `dense_out`, `skip`
//! and `norm` for [`ResidualBlock`].

use super::linear;
use crate::dropout::Dropout;
use tch::nn::{self, Module};
use tch::Tensor;

/// A feed-forward network: hidden `Linear + ReLU` layers (with dropout
/// after each activation when its probability is positive) and a linear
/// output layer.
#[derive(Debug)]
pub struct ReluMlp {
    hidden: Vec<nn::Linear>,
    out: nn::Linear,
    dropout: f64,
}

impl ReluMlp {
    /// `input` features in, one hidden layer per entry of `hidden` (its
    /// width), `output` features out; `dropout` after every ReLU.
    /// The caller checks that every width is positive.
    pub fn new(p: &nn::Path<'_>, input: i64, hidden: &[i64], output: i64, dropout: f64) -> Self {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut width = input;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(linear(p / format!("hidden_{i}"), width, h));
            width = h;
        }
        Self {
            hidden: layers,
            out: linear(p / "out", width, output),
            dropout,
        }
    }

    /// `[.., input]` to `[.., output]`, dropout on when `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for layer in &self.hidden {
            h = layer.forward(&h).relu();
            if self.dropout > 0.0 {
                h = h.dropout_t(self.dropout, train);
            }
        }
        self.out.forward(&h)
    }
}

/// TiDE's residual block: a one-hidden-layer ReLU MLP plus a linear skip
/// connection, dropout on the MLP branch, and a layer norm of the sum.
#[derive(Debug)]
pub struct ResidualBlock {
    dense_in: nn::Linear,
    dense_out: nn::Linear,
    skip: nn::Linear,
    norm: Option<nn::LayerNorm>,
    dropout: f64,
}

impl ResidualBlock {
    /// `input` features in, a hidden layer of `hidden` units, `output`
    /// features out; a layer norm over the `output` features when
    /// `layer_norm`; `dropout` on the MLP branch.
    pub fn new(
        p: &nn::Path<'_>,
        input: i64,
        hidden: i64,
        output: i64,
        dropout: f64,
        layer_norm: bool,
    ) -> Self {
        Self {
            dense_in: linear(p / "dense_in", input, hidden),
            dense_out: linear(p / "dense_out", hidden, output),
            skip: linear(p / "skip", input, output),
            norm: layer_norm.then(|| nn::layer_norm(p / "norm", vec![output], Default::default())),
            dropout,
        }
    }

    /// `[.., input]` to `[.., output]`, dropout on when `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self
            .dense_out
            .forward(&self.dense_in.forward(x).relu())
            .dropout_t(self.dropout, train);
        let y = h + self.skip.forward(x);
        match &self.norm {
            Some(norm) => norm.forward(&y),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_and_names() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mlp = ReluMlp::new(&(vs.root() / "m"), 6, &[8, 4], 3, 0.1);
        let block = ResidualBlock::new(&(vs.root() / "r"), 6, 8, 5, 0.1, true);
        let x = Tensor::randn([2, 6], (Kind::Float, Device::Cpu));
        assert_eq!(mlp.forward_t(&x, true).size(), vec![2, 3]);
        assert_eq!(block.forward_t(&x, false).size(), vec![2, 5]);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "m.hidden_0.bias",
                "m.hidden_0.weight",
                "m.hidden_1.bias",
                "m.hidden_1.weight",
                "m.out.bias",
                "m.out.weight",
                "r.dense_in.bias",
                "r.dense_in.weight",
                "r.dense_out.bias",
                "r.dense_out.weight",
                "r.norm.bias",
                "r.norm.weight",
                "r.skip.bias",
                "r.skip.weight",
            ]
        );
    }
}
