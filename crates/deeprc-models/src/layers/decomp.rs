//! Moving-average trend / seasonal decomposition of a window (DLinear,
//! Autoformer).
//!
//! As in Zeng et al. 2023 (DLinear) and Wu et al. 2021 (Autoformer), and
//! NeuralForecast's `MovingAvg` / `SeriesDecomp`: the window is padded at
//! both ends by repeating its first and last values, a moving average of
//! `kernel` steps with stride 1 gives the trend (same length as the
//! window), and the seasonal part is what remains.
//!
//! ```text
//!  x [N, L] or [N, L, D]
//!  pad: (kernel-1)/2 copies of x[:, 0] in front, kernel-1-(kernel-1)/2 copies of x[:, L-1] behind
//!  trend    = AvgPool1d(kernel, stride 1) over time   (length L again)
//!  seasonal = x - trend
//! ```
//!
//! For an odd kernel (the published 25) the padding is symmetric, exactly
//! as in the papers; an even kernel gets one more copy behind than in
//! front so that the trend still has `L` steps (NeuralForecast's DLinear
//! rejects even kernels; the models here validate their own).

use tch::Tensor;

/// The moving average (trend) of `x` over time, with replicate padding.
///
/// `x` is `[N, L]` (time on dimension 1) or `[N, L, D]` (time on
/// dimension 1, `D` series averaged independently); the result has the
/// shape of `x`. A `kernel` below 2 is the identity (a copy of `x`).
/// Any kernel works for any `L`, also one longer than the window: the
/// padding repeats the end values as often as needed.
///
/// # Panics
/// Only when `x` is neither 2- nor 3-dimensional (a programming error of
/// the calling model, which knows its shapes).
pub fn moving_average(x: &Tensor, kernel: i64) -> Tensor {
    if kernel < 2 {
        return x.copy();
    }
    let dims = x.dim();
    assert!(
        dims == 2 || dims == 3,
        "moving_average: x must be [N, L] or [N, L, D], got {:?}",
        x.size()
    );
    // As [N, C, L] for avg_pool1d: C = 1 for [N, L], C = D for [N, L, D].
    let seq = if dims == 2 {
        x.unsqueeze(1)
    } else {
        x.permute([0, 2, 1])
    };
    let len = seq.size()[2];
    let front_n = (kernel - 1) / 2;
    let back_n = kernel - 1 - front_n;
    let mut parts = Vec::with_capacity(3);
    if front_n > 0 {
        parts.push(seq.narrow(2, 0, 1).repeat([1, 1, front_n]));
    }
    parts.push(seq.shallow_clone());
    if back_n > 0 {
        parts.push(seq.narrow(2, len - 1, 1).repeat([1, 1, back_n]));
    }
    let padded = Tensor::cat(&parts, 2);
    let trend = padded.avg_pool1d([kernel], [1], [0], false, true);
    if dims == 2 {
        trend.squeeze_dim(1)
    } else {
        trend.permute([0, 2, 1])
    }
}

/// The decomposition of `x` (`[N, L]` or `[N, L, D]`) into
/// `(seasonal, trend)`, `trend` being [`moving_average`] of `kernel` steps
/// and `seasonal = x - trend`; both have the shape of `x`.
///
/// # Panics
/// As [`moving_average`].
pub fn series_decomp(x: &Tensor, kernel: i64) -> (Tensor, Tensor) {
    let trend = moving_average(x, kernel);
    (x - &trend, trend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_a_direct_moving_average() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let x = Tensor::randn([3, 10], (Kind::Float, Device::Cpu));
        let k = 5;
        let trend = moving_average(&x, k);
        assert_eq!(trend.size(), vec![3, 10]);
        let xs: Vec<Vec<f32>> = (0..3)
            .map(|i| Vec::<f32>::try_from(x.get(i)).expect("a row"))
            .collect();
        for (i, row) in xs.iter().enumerate() {
            for t in 0..10i64 {
                let mut s = 0.0f32;
                for j in (t - 2)..=(t + 2) {
                    s += row[j.clamp(0, 9) as usize];
                }
                let got = trend.double_value(&[i as i64, t]) as f32;
                assert!(
                    (got - s / 5.0).abs() < 1e-5,
                    "row {i} t {t}: {got} vs {}",
                    s / 5.0
                );
            }
        }
        let (seasonal, trend2) = series_decomp(&x, k);
        assert!(
            (seasonal + trend2 - &x).abs().max().double_value(&[]) < 1e-6,
            "seasonal + trend is x"
        );
    }

    #[test]
    fn three_dimensional_long_kernel_and_identity() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let x = Tensor::randn([2, 7, 3], (Kind::Float, Device::Cpu));
        // kernel longer than the window, and an even one
        for k in [25, 4] {
            let t3 = moving_average(&x, k);
            assert_eq!(t3.size(), vec![2, 7, 3]);
            // each of the D series alone, through the 2-D path
            for d in 0..3 {
                let one = moving_average(&x.select(2, d), k);
                let diff = (one - t3.select(2, d)).abs().max().double_value(&[]);
                assert!(diff < 1e-6);
            }
        }
        let same = moving_average(&x, 1);
        assert!((same - &x).abs().max().double_value(&[]) == 0.0);
        // a constant series is all trend
        let c = Tensor::full([1, 9], 2.5, (Kind::Float, Device::Cpu));
        let (s, t) = series_decomp(&c, 25);
        assert!(s.abs().max().double_value(&[]) < 1e-6);
        assert!((t - 2.5).abs().max().double_value(&[]) < 1e-6);
    }
}
