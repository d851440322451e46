//! Small helpers every crate of Deep RC needs the same way: taking a lock
//! whose holder may have panicked, and the text of a panic's payload.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, also when a thread panicked while holding it: Deep RC's
/// shared state stays consistent across a panic (each update is a single
/// assignment or push), and a panicking rank or task must not take the
/// runtime down with it.
///
/// ```
/// use std::sync::Mutex;
/// let m = Mutex::new(1);
/// *deeprc_core::sync::lock(&m) += 1;
/// assert_eq!(*deeprc_core::sync::lock(&m), 2);
/// ```
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The text of a panic payload (`panic!` with a literal or a formatted
/// message), or a placeholder for any other payload.
///
/// ```
/// let p = std::panic::catch_unwind(|| panic!("rank {} failed", 3)).unwrap_err();
/// assert_eq!(deeprc_core::sync::panic_message(&*p), "rank 3 failed");
/// let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
/// assert_eq!(deeprc_core::sync::panic_message(&*p), "a panic with a non-string payload");
/// ```
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
