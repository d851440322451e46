//! # deeprc-frame
//!
//! Distributed Arrow tables with Cylon's operators (issue 3).
//!
//! This crate is a member of the workspace so that its place in the
//! dependency graph is fixed; its contents land with its issue.
