//! The agent's queue of tasks whose dependencies are met, in scheduling
//! order (priority, then submission), with what a scheduling pass needs to
//! stop early and a cancellation needs to find a task without a walk: the
//! number of queued tasks of each (priority, shape) and each task's key.
//!
//! A pass that met a shape that does not fit skips that shape's other
//! tasks; once every shape queued at the blocking priority has failed, no
//! later task can be placed, and the pass stops instead of walking the rest
//! of the queue (a walk per event made a million queued tasks quadratic).

use crate::scheduler::Shape;
use crate::task::TaskShared;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A task's place in the queue: higher priority first, then submission.
pub(crate) type ReadyKey = (Reverse<i32>, u64);

/// What the queue needs to know of a task.
pub(crate) trait Queued {
    fn id(&self) -> u64;
    fn priority(&self) -> i32;
    fn shape(&self) -> Shape;
}

impl Queued for Arc<TaskShared> {
    fn id(&self) -> u64 {
        self.id.0
    }
    fn priority(&self) -> i32 {
        self.desc.priority
    }
    fn shape(&self) -> Shape {
        self.shape
    }
}

pub(crate) struct ReadyQueue<T = Arc<TaskShared>> {
    tasks: BTreeMap<ReadyKey, T>,
    key_of: HashMap<u64, ReadyKey>,
    shapes: HashMap<i32, HashMap<Shape, usize>>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self {
            tasks: BTreeMap::new(),
            key_of: HashMap::new(),
            shapes: HashMap::new(),
        }
    }
}

impl<T: Queued> ReadyQueue<T> {
    pub(crate) fn insert(&mut self, t: T) {
        let key = (Reverse(t.priority()), t.id());
        *self
            .shapes
            .entry(t.priority())
            .or_default()
            .entry(t.shape())
            .or_default() += 1;
        self.key_of.insert(t.id(), key);
        if let Some(old) = self.tasks.insert(key, t) {
            // The same task queued twice: count it once.
            self.forget(&old);
        }
    }

    pub(crate) fn remove(&mut self, key: &ReadyKey) -> Option<T> {
        let t = self.tasks.remove(key)?;
        self.key_of.remove(&t.id());
        self.forget(&t);
        Some(t)
    }

    /// The queued task `id`, taken out.
    pub(crate) fn remove_id(&mut self, id: u64) -> Option<T> {
        let key = *self.key_of.get(&id)?;
        self.remove(&key)
    }

    fn forget(&mut self, t: &T) {
        let (priority, shape) = (t.priority(), t.shape());
        if let Some(by_shape) = self.shapes.get_mut(&priority) {
            if let Some(n) = by_shape.get_mut(&shape) {
                *n -= 1;
                if *n == 0 {
                    by_shape.remove(&shape);
                }
            }
            if by_shape.is_empty() {
                self.shapes.remove(&priority);
            }
        }
    }

    /// Every queued task, in order, leaving the queue empty.
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        self.key_of.clear();
        self.shapes.clear();
        std::mem::take(&mut self.tasks).into_values().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ReadyKey, &T)> {
        self.tasks.iter()
    }

    /// Whether every shape queued at `priority` is in `failed`.
    pub(crate) fn all_shapes_failed(&self, priority: i32, failed: &[Shape]) -> bool {
        self.shapes
            .get(&priority)
            .is_none_or(|by_shape| by_shape.keys().all(|s| failed.contains(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct T(u64, i32, usize);

    impl Queued for T {
        fn id(&self) -> u64 {
            self.0
        }
        fn priority(&self) -> i32 {
            self.1
        }
        fn shape(&self) -> Shape {
            Shape {
                ranks: 1,
                cores: self.2,
                gpu_units: 0,
                mem: 0,
                span_nodes: false,
            }
        }
    }

    #[test]
    fn order_lookup_and_shape_counts() {
        let mut q = ReadyQueue::default();
        for t in [T(1, 0, 2), T(2, 5, 1), T(3, 0, 1), T(4, 0, 2)] {
            q.insert(t);
        }
        let order: Vec<u64> = q.iter().map(|(_, t)| t.0).collect();
        assert_eq!(order, vec![2, 1, 3, 4], "priority first, then submission");
        let two = T(0, 0, 2).shape();
        let one = T(0, 0, 1).shape();
        assert!(!q.all_shapes_failed(0, &[two]));
        assert!(q.all_shapes_failed(0, &[two, one]));
        assert!(q.all_shapes_failed(7, &[]), "nothing queued at 7");
        assert_eq!(q.remove_id(3), Some(T(3, 0, 1)));
        assert!(q.all_shapes_failed(0, &[two]), "the 1-core task left");
        assert_eq!(q.remove_id(3), None);
        q.insert(T(1, 0, 2));
        assert_eq!(q.iter().count(), 3, "a task queued twice counts once");
        assert_eq!(q.remove_id(1), Some(T(1, 0, 2)));
        assert!(q.all_shapes_failed(0, &[two]));
        assert!(!q.all_shapes_failed(0, &[]), "task 4 is still there");
        assert_eq!(q.take_all(), vec![T(2, 5, 1), T(4, 0, 2)]);
        assert!(q.is_empty() && q.all_shapes_failed(0, &[]) && q.remove_id(4).is_none());
    }
}
