//! Dropout whose masks come from a generator of the calling thread, seeded
//! per rank ([`seed_thread`]), instead of libtorch's process-wide one.
//!
//! Thread ranks and concurrent pilot tasks share one process and so one
//! libtorch generator: the masks a rank drew depended on how the threads
//! interleaved, and the same model with the same seed gave another test
//! MSE under the pilot than on bare metal (Autoformer 0.5207 against
//! 0.5160 in the main job of 2026-12-01). With a generator per thread,
//! a rank's masks depend only on its seed and its steps. Threads that never
//! called [`seed_thread`] keep libtorch's dropout (and its speed: the
//! seeded masks are drawn on the CPU, one random number per element).
//!
//! ```
//! use deeprc_models::dropout::{seed_thread, Dropout};
//! use tch::{Kind, Device, Tensor};
//! let x = Tensor::ones([4, 256], (Kind::Float, Device::Cpu));
//! seed_thread(7);
//! let a = x.dropout_t(0.5, true);
//! seed_thread(7);
//! let b = x.dropout_t(0.5, true);
//! assert!(a.equal(&b));
//! // Kept values are scaled by 1 / (1 - p); evaluation mode is the identity.
//! assert!(a.max().double_value(&[]) == 2.0);
//! assert!(x.dropout_t(0.5, false).equal(&x));
//! ```

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::cell::RefCell;
use tch::Tensor;

thread_local! {
    static GENERATOR: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds this thread's dropout generator: every [`Dropout::dropout_t`] on
/// this thread then draws its masks from it.
pub fn seed_thread(seed: u64) {
    GENERATOR.with(|g| *g.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Whether this thread has its own dropout generator.
pub fn thread_is_seeded() -> bool {
    GENERATOR.with(|g| g.borrow().is_some())
}

/// Forgets this thread's generator (libtorch's dropout again).
pub fn unseed_thread() {
    GENERATOR.with(|g| *g.borrow_mut() = None);
}

/// Inverted dropout with this thread's generator (see the module).
pub trait Dropout {
    /// Zeroes each element with probability `p` and scales the others by
    /// `1 / (1 - p)` when `train`; the identity otherwise.
    fn dropout_t(&self, p: f64, train: bool) -> Tensor;
}

impl Dropout for Tensor {
    fn dropout_t(&self, p: f64, train: bool) -> Tensor {
        if !train || p <= 0.0 {
            return self.shallow_clone();
        }
        if p >= 1.0 {
            return self.zeros_like();
        }
        GENERATOR.with(|g| {
            let mut g = g.borrow_mut();
            let Some(rng) = g.as_mut() else {
                return self.dropout(p, train);
            };
            // Keep when a uniform u32 is at or above p * 2^32.
            let threshold = (p * 4_294_967_296.0) as u64;
            let keep = (1.0 / (1.0 - p)) as f32;
            let mask: Vec<f32> = (0..self.numel())
                .map(|_| {
                    if u64::from(rng.next_u32()) >= threshold {
                        keep
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_slice(&mask)
                .reshape(self.size())
                .to_kind(self.kind())
                .to_device(self.device());
            self * mask
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn each_thread_has_its_own_masks() {
        let x = Tensor::ones([1000], (Kind::Float, Device::Cpu));
        let draw = |seed: u64| {
            let x = x.shallow_clone();
            std::thread::spawn(move || {
                seed_thread(seed);
                Vec::<f32>::try_from(x.dropout_t(0.3, true)).unwrap()
            })
        };
        // Two threads drawing at once get what each gets alone.
        let (a, b) = (draw(1), draw(2));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_eq!(a, draw(1).join().unwrap());
        assert_ne!(a, b);
        let kept = a.iter().filter(|&&v| v > 0.0).count();
        assert!((600..800).contains(&kept), "{kept} of 1000 kept at p = 0.3");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    }

    #[test]
    fn edges() {
        let x = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
        seed_thread(3);
        assert!(x.dropout_t(0.0, true).equal(&x));
        assert!(x.dropout_t(1.0, true).equal(&x.zeros_like()));
        unseed_thread();
        assert_eq!(x.dropout_t(0.5, true).size(), vec![3, 4]);
    }
}
