//! Placeholder: the nccl backend.
