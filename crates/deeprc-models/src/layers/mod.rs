//! Building blocks shared by several models.
//!
//! Each block is a plain `tch` module made on an [`nn::Path`]; a model
//! that needs one builds it under its own path so that parameter names
//! stay unique and stable (checkpoints and the data-parallel trainer key
//! parameters by name).

pub mod attention;
pub mod decomp;
pub mod mlp;

use tch::nn;

/// A `Linear` layer initialised as PyTorch's `nn.Linear`: weight and bias
/// uniform in `±1/sqrt(i)`. Its parameters are `weight` (`[o, i]`) and,
/// when `bias`, `bias` (`[o]`) under `p`.
pub fn torch_linear(p: nn::Path<'_>, i: i64, o: i64, bias: bool) -> nn::Linear {
    let bound = 1.0 / (i.max(1) as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias,
        },
    )
}

/// [`torch_linear`] with a bias: a `Linear` layer as PyTorch's
/// `nn.Linear` makes it (tch's own default is Kaiming-uniform with a ReLU
/// gain, about 2.4 times wider).
pub fn linear(p: nn::Path<'_>, i: i64, o: i64) -> nn::Linear {
    torch_linear(p, i, o, true)
}
