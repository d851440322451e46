//! Placeholder: the gloo backend.
