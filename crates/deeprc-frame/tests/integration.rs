//! The integration tests of deeprc-frame, one binary (DataFusion makes
//! every test binary slow to link).

#[path = "integration/backends.rs"]
mod backends;
#[path = "integration/bad_input.rs"]
mod bad_input;
#[path = "../../deeprc-comm/tests/common/cluster.rs"]
mod cluster;
#[path = "integration/common.rs"]
mod common;
#[path = "integration/dist_ops.rs"]
mod dist_ops;
#[path = "integration/faults.rs"]
mod faults;
#[path = "integration/io_and_errors.rs"]
mod io_and_errors;
#[path = "integration/local_ops.rs"]
mod local_ops;
#[path = "integration/properties.rs"]
mod properties;
#[path = "integration/sql.rs"]
mod sql;
