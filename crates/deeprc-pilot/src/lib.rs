//! # deeprc-pilot
//!
//! A pilot-job runtime with RADICAL-Pilot's model (issue 4).
//!
//! This crate is a member of the workspace so that its place in the
//! dependency graph is fixed; its contents land with its issue.
