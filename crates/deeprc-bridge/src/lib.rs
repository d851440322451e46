//! # deeprc-bridge
//!
//! The Data Bridge from Arrow tables to tch and TensorFlow (issue 5).
//!
//! This crate is a member of the workspace so that its place in the
//! dependency graph is fixed; its contents land with its issue.
