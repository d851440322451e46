//! Placeholder: the gloo backend's stub is written with the backend.
