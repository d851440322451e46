//! Arrow IPC stream encoding: how process ranks exchange tables.
//!
//! Decoding is zero-copy: the received [`Bytes`] become the Arrow buffers of
//! the decoded batches (Arrow copies only a misaligned buffer).

use crate::error::{Context, FrameError, Result};
use crate::table::Table;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;

/// Encodes `batches` of `schema` as one Arrow IPC stream.
pub fn encode_batches(schema: &Schema, batches: &[RecordBatch]) -> Result<Bytes> {
    // Capacity from the sliced sizes (a slice reports its whole buffers in
    // `get_array_memory_size`).
    let cap: usize = batches
        .iter()
        .flat_map(|b| b.columns())
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum::<usize>()
        + 64 * batches.len()
        + 1024;
    let mut w =
        StreamWriter::try_new(Vec::with_capacity(cap), schema).ctx("starting an IPC stream")?;
    for b in batches {
        w.write(b).ctx("writing a batch to an IPC stream")?;
    }
    w.finish().ctx("finishing an IPC stream")?;
    Ok(Bytes::from(w.into_inner().ctx("closing an IPC stream")?))
}

/// Encodes a table as one Arrow IPC stream.
pub fn encode(table: &Table) -> Result<Bytes> {
    encode_batches(table.schema(), table.batches())
}

/// Decodes one Arrow IPC stream into its schema and batches (zero-copy).
pub fn decode_batches(bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut buf = Buffer::from(bytes);
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    while !buf.is_empty() {
        match dec.decode(&mut buf).ctx("decoding an IPC stream")? {
            Some(b) => out.push(b),
            None => {
                if buf.is_empty() {
                    break;
                }
            }
        }
    }
    dec.finish().ctx("an IPC stream ended early")?;
    let schema = dec
        .schema()
        .ok_or_else(|| FrameError::invalid("ipc::decode", "the stream has no schema"))?;
    Ok((schema, out))
}

/// Decodes one Arrow IPC stream into a table.
pub fn decode(bytes: Bytes) -> Result<Table> {
    let (schema, batches) = decode_batches(bytes)?;
    Table::try_new(schema, batches)
}

/// Encodes a schema alone (a stream with no batch).
pub fn encode_schema(schema: &Schema) -> Result<Bytes> {
    encode_batches(schema, &[])
}

/// Decodes a schema sent by [`encode_schema`].
pub fn decode_schema(bytes: Bytes) -> Result<SchemaRef> {
    Ok(decode_batches(bytes)?.0)
}
