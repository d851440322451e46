//! Where a dataset's rows come from: this rank's record batches, and how
//! they relate to the other ranks'.

use crate::error::{BridgeError, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deeprc_comm::Communicator;
use deeprc_frame::{DistTable, Table};
use std::sync::Arc;

/// How the rows of the ranks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// One process, no communicator: rank 0 of 1.
    Single,
    /// Every rank holds the same rows (each read the whole file): the
    /// sampler splits one global permutation between the ranks, exactly as
    /// PyTorch's `DistributedSampler` does. Statistics are computed locally
    /// (they are the same everywhere).
    Replicated,
    /// Each rank holds its own rows (a [`DistTable`] partition): samples
    /// stay where their rows are (or move once at build time to balance the
    /// ranks, see [`Balance`](crate::Balance)); statistics are all-reduced.
    Partitioned,
}

/// A dataset's input on this rank: record batches, their schema, and the
/// communicator with the sharding, if any.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) comm: Option<Arc<dyn Communicator>>,
    pub(crate) sharding: Sharding,
}

impl DataSource {
    /// A single-process source over record batches of `schema`.
    ///
    /// # Errors
    /// [`BridgeError::InvalidArgument`] when a batch has another schema.
    pub fn from_batches(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        for (i, b) in batches.iter().enumerate() {
            if b.schema().fields() != schema.fields() {
                return Err(BridgeError::invalid(
                    "DataSource::from_batches",
                    format!(
                        "record batch {i} has schema {:?}, expected {:?}",
                        b.schema(),
                        schema
                    ),
                ));
            }
        }
        Ok(DataSource {
            schema,
            batches,
            comm: None,
            sharding: Sharding::Single,
        })
    }

    /// The same rows on every rank of `comm` ([`Sharding::Replicated`]).
    pub fn replicated(mut self, comm: Arc<dyn Communicator>) -> Self {
        self.comm = Some(comm);
        self.sharding = Sharding::Replicated;
        self
    }

    /// This rank's own rows of a table spread over `comm`
    /// ([`Sharding::Partitioned`]).
    pub fn partitioned(mut self, comm: Arc<dyn Communicator>) -> Self {
        self.comm = Some(comm);
        self.sharding = Sharding::Partitioned;
        self
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The local record batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Rows on this rank.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The sharding.
    pub fn sharding(&self) -> Sharding {
        self.sharding
    }

    /// This rank (0 without a communicator).
    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    /// The number of ranks (1 without a communicator).
    pub fn world(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.size())
    }

    /// The communicator, when the rows of other ranks matter (partitioned).
    pub(crate) fn reducing_comm(&self) -> Option<&dyn Communicator> {
        match self.sharding {
            Sharding::Partitioned => self.comm.as_deref(),
            _ => None,
        }
    }
}

impl From<&Table> for DataSource {
    /// A single-process source over the table's batches (no copy: record
    /// batches share their buffers).
    fn from(t: &Table) -> Self {
        DataSource {
            schema: Arc::clone(t.schema()),
            batches: t.batches().to_vec(),
            comm: None,
            sharding: Sharding::Single,
        }
    }
}

impl From<&DistTable> for DataSource {
    /// This rank's partition, [`Sharding::Partitioned`] over the table's
    /// communicator.
    fn from(t: &DistTable) -> Self {
        DataSource {
            schema: Arc::clone(t.schema()),
            batches: t.partition().batches().to_vec(),
            comm: Some(Arc::clone(t.comm())),
            sharding: Sharding::Partitioned,
        }
    }
}

impl From<RecordBatch> for DataSource {
    fn from(b: RecordBatch) -> Self {
        DataSource {
            schema: b.schema(),
            batches: vec![b],
            comm: None,
            sharding: Sharding::Single,
        }
    }
}
