//! Gloo's own connections are not authenticated: the first Gloo
//! communicator of a process says so, once, with `tracing::warn!` (a test
//! binary of its own: the warning is once per process).

#![cfg(feature = "gloo")]

use deeprc_comm::{
    gloo::{GlooComm, GlooOptions, HashStore, UNAUTHENTICATED_WARNING},
    Communicator,
};
use std::sync::{Arc, Mutex};
use tracing::{
    field::{Field, Visit},
    span, Event, Level, Metadata, Subscriber,
};

/// Records the message of every warning.
#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The subscriber: every event of level WARN or above into `Warnings`.
struct Sub(Arc<Warnings>);

impl Subscriber for Sub {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= Level::WARN
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut m = Message(String::new());
        e.record(&mut m);
        self.0 .0.lock().unwrap().push(m.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

#[test]
fn the_first_gloo_communicator_warns_once_that_its_mesh_is_unauthenticated() {
    let warnings = Arc::new(Warnings::default());
    tracing::subscriber::set_global_default(Sub(Arc::clone(&warnings))).unwrap();
    for round in 0..2 {
        let store = HashStore::new();
        let token = format!("warn-test-{round}");
        std::thread::scope(|s| {
            for r in 0..2 {
                let (store, token) = (store.clone(), token.clone());
                s.spawn(move || {
                    let c = GlooComm::connect(GlooOptions::new(r, 2, store, token)).unwrap();
                    c.barrier().unwrap();
                });
            }
        });
    }
    let got = warnings.0.lock().unwrap().clone();
    let about_gloo: Vec<_> = got
        .iter()
        .filter(|m| m.contains("NOT authenticated"))
        .collect();
    assert_eq!(about_gloo.len(), 1, "{got:?}");
    assert_eq!(about_gloo[0], UNAUTHENTICATED_WARNING);
}
