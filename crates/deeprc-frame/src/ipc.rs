//! Arrow IPC stream encoding: how process ranks exchange tables.
//!
//! Decoding is zero-copy: the received [`Bytes`] become the Arrow buffers of
//! the decoded batches (Arrow copies only a misaligned buffer). Received
//! bytes are checked before they are decoded (see [`decode_batches`]).

use crate::error::{Context, FrameError, Result};
use crate::limits::max_rows;
use crate::table::Table;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::root_as_message;
use datafusion::arrow::ipc::writer::StreamWriter;
use std::panic::AssertUnwindSafe;

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
///
/// The bytes need not be trusted: the framing (message and body lengths,
/// the buffers of every batch, the end-of-stream marker) is checked before
/// Arrow decodes anything, so a truncated stream is an error rather than a
/// shorter table, and a forged one an error rather than a panic.
///
/// ```
/// use deeprc_frame::{ipc, Table};
/// use deeprc_frame::arrow::array::{ArrayRef, Int64Array};
/// use std::sync::Arc;
/// let t = Table::from_columns(vec![("a", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
/// let bytes = ipc::encode(&t).unwrap();
/// assert!(ipc::decode(bytes.clone()).unwrap().equals(&t).unwrap());
/// assert!(ipc::decode(bytes.slice(..bytes.len() - 8)).is_err());
/// ```
///
/// # Errors
/// [`FrameError::Arrow`] naming what is malformed.
pub fn decode_batches(bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    decode_checked(bytes).map_err(|e| match e {
        DecodeError::Arrow(source) => FrameError::Arrow {
            context: "decoding an IPC stream".into(),
            source,
        },
        DecodeError::Malformed(reason) => FrameError::Arrow {
            context: "decoding an IPC stream".into(),
            source: ArrowError::IpcError(reason),
        },
    })
}

/// [`decode_batches`] of a stream that `rank` sent to operation `op`:
/// errors are [`FrameError::MalformedPeerData`] naming the rank.
pub(crate) fn decode_batches_from(
    bytes: Bytes,
    op: &'static str,
    rank: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    decode_checked(bytes).map_err(|e| FrameError::MalformedPeerData {
        op,
        what: "IPC stream",
        rank,
        reason: match e {
            DecodeError::Arrow(a) => a.to_string(),
            DecodeError::Malformed(m) => m,
        },
    })
}

/// [`decode_schema`] of a schema that `rank` sent to operation `op`.
pub(crate) fn decode_schema_from(bytes: Bytes, op: &'static str, rank: usize) -> Result<SchemaRef> {
    Ok(decode_batches_from(bytes, op, rank)?.0)
}

enum DecodeError {
    /// Arrow's decoder refused the stream.
    Arrow(ArrowError),
    /// The framing checks refused it (or Arrow's decoder panicked).
    Malformed(String),
}

fn decode_checked(bytes: Bytes) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), DecodeError> {
    check_framing(&bytes).map_err(DecodeError::Malformed)?;
    // The framing checks cover the panics known in Arrow's decoder (buffers
    // outside their body); a forged message that is valid flatbuffer but not
    // a valid schema can still make it panic (`fb_to_schema` unwraps), and
    // Arrow cannot be changed from here: such a panic becomes an error. The
    // decoder's state is local and dropped, so nothing is left half-done.
    std::panic::catch_unwind(AssertUnwindSafe(|| decode_stream(bytes))).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(DecodeError::Malformed(format!(
            "Arrow's IPC decoder failed on the message: {msg}"
        )))
    })
}

fn decode_stream(bytes: Bytes) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), DecodeError> {
    let mut buf = Buffer::from(bytes);
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    while !buf.is_empty() {
        match dec.decode(&mut buf).map_err(DecodeError::Arrow)? {
            Some(b) => out.push(b),
            None => {
                if buf.is_empty() {
                    break;
                }
            }
        }
    }
    dec.finish().map_err(DecodeError::Arrow)?;
    let schema = dec
        .schema()
        .ok_or_else(|| DecodeError::Malformed("the stream has no schema".into()))?;
    Ok((schema, out))
}

const CONTINUATION: u32 = 0xFFFF_FFFF;

/// Walks the messages of a stream: `[0xFFFFFFFF] len:u32 metadata[len]
/// body[bodyLength]`, then `[0xFFFFFFFF] 0`. Checks that every length fits
/// in the bytes that are there, that the metadata is a valid flatbuffer
/// `Message`, that every buffer of a batch lies inside its body and that the
/// stream ends with the end-of-stream marker and nothing after it.
fn check_framing(b: &[u8]) -> std::result::Result<(), String> {
    let u32_at = |pos: usize| -> Option<u32> {
        let s = b.get(pos..pos.checked_add(4)?)?;
        Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let truncated = |pos: usize| {
        format!(
            "the stream of {} bytes ends at byte {pos} without its end-of-stream marker (truncated)",
            b.len()
        )
    };
    let mut pos = 0usize;
    let mut messages = 0usize;
    let mut rows = 0u64;
    loop {
        let at = pos;
        let mut len = u32_at(pos).ok_or_else(|| truncated(pos))?;
        pos += 4;
        if len == CONTINUATION {
            len = u32_at(pos).ok_or_else(|| truncated(pos))?;
            pos += 4;
        }
        if len == 0 {
            if pos != b.len() {
                return Err(format!(
                    "{} bytes follow the end-of-stream marker at byte {at}",
                    b.len() - pos
                ));
            }
            if messages == 0 {
                return Err("the stream has no schema".into());
            }
            return Ok(());
        }
        let len = len as usize;
        let left = b.len() - pos;
        if len > left {
            return Err(format!(
                "message {messages} at byte {at} claims {len} bytes of metadata but {left} are left"
            ));
        }
        let msg = root_as_message(&b[pos..pos + len])
            .map_err(|e| format!("message {messages} at byte {at}: invalid metadata: {e}"))?;
        pos += len;
        let body = usize::try_from(msg.bodyLength()).map_err(|_| {
            format!(
                "message {messages} at byte {at}: negative body length {}",
                msg.bodyLength()
            )
        })?;
        let left = b.len() - pos;
        if body > left {
            return Err(format!(
                "message {messages} at byte {at} claims a body of {body} bytes but {left} are left"
            ));
        }
        let batch = msg
            .header_as_record_batch()
            .or_else(|| msg.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(rb) = batch {
            // A batch's row count is not backed by bytes when it has no
            // columns (or only null-typed ones): the fuzzer's 456-byte
            // stream claimed 34,359,738,627 rows of no columns, and every
            // pass over those rows then ran for hours. A partition holds at
            // most `MAX_ROWS` rows, so a stream claiming more is refused
            // before Arrow decodes it.
            let claimed = rb.length();
            rows = rows.saturating_add(u64::try_from(claimed).unwrap_or(u64::MAX));
            if claimed < 0 || rows > max_rows() as u64 {
                return Err(format!(
                    "message {messages} at byte {at}: a batch of {claimed} rows brings the \
                     stream to {rows} rows, over the limit of {} rows of a partition",
                    max_rows()
                ));
            }
        }
        if let Some(buffers) = batch.and_then(|rb| rb.buffers()) {
            for (i, buf) in buffers.iter().enumerate() {
                let (o, l) = (buf.offset(), buf.length());
                let inside = o >= 0 && l >= 0 && (o as u128 + l as u128) <= body as u128;
                if !inside {
                    return Err(format!(
                        "message {messages} at byte {at}: buffer {i} (offset {o}, length {l}) \
                         lies outside its body of {body} bytes"
                    ));
                }
            }
        }
        pos += body;
        messages += 1;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
    use std::panic::catch_unwind;
    use std::sync::Arc;

    fn table() -> Table {
        let k: Int64Array = (0..40).map(|i| (i % 7 != 0).then_some(i)).collect();
        let s: StringArray = (0..40)
            .map(|i| (i % 5 != 0).then(|| "x".repeat(i % 9)))
            .collect();
        let b: BooleanArray = (0..40).map(|i| Some(i % 3 == 0)).collect();
        let t1 = Table::from_columns(vec![
            ("k", Arc::new(k) as ArrayRef),
            ("s", Arc::new(s) as ArrayRef),
            ("b", Arc::new(b) as ArrayRef),
        ])
        .unwrap();
        Table::concat(&[t1.slice(0, 25), t1.slice(25, 15)]).unwrap()
    }

    fn decode_no_panic(what: &str, bytes: Vec<u8>) -> Result<Table> {
        catch_unwind(AssertUnwindSafe(|| decode(Bytes::from(bytes))))
            .unwrap_or_else(|_| panic!("{what}: the IPC decoder panicked"))
    }

    #[test]
    fn round_trip() {
        let t = table();
        assert!(decode(encode(&t).unwrap()).unwrap().equals(&t).unwrap());
        let s = decode_schema(encode_schema(t.schema()).unwrap()).unwrap();
        assert_eq!(s.as_ref(), t.schema().as_ref());
    }

    /// Every truncation of a stream is an error (not a shorter table), and
    /// no forged byte makes the decoder panic.
    #[test]
    fn truncated_and_forged_streams_are_errors_not_panics() {
        let t = table();
        let good = encode(&t).unwrap().to_vec();
        for cut in 0..good.len() {
            let r = decode_no_panic(&format!("cut at {cut}"), good[..cut].to_vec());
            assert!(
                r.is_err(),
                "a stream cut at {cut} of {} decoded",
                good.len()
            );
        }
        for i in 0..good.len() {
            for x in [0xffu8, 0x80, 0x01] {
                let mut b = good.clone();
                b[i] ^= x;
                let _ = decode_no_panic(&format!("byte {i} ^ {x:#x}"), b);
            }
        }
        // Forged 32-bit lengths at every position.
        for i in 0..good.len().saturating_sub(4) {
            for v in [u32::MAX, 0x7fff_fff8, 1 << 20] {
                let mut b = good.clone();
                b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                let _ = decode_no_panic(&format!("u32 {v:#x} at {i}"), b);
            }
        }
    }

    /// Found by the `frame_ipc` fuzz target (a timeout): 456 bytes claiming
    /// a batch of 34,359,738,627 rows of no columns decoded, and every pass
    /// over the rows then ran for hours. Now the stream is refused, before
    /// Arrow decodes it, for claiming more rows than a partition may hold.
    #[test]
    fn a_stream_claiming_more_rows_than_a_partition_holds_is_refused() {
        let hex: String = [
            "ffffffff780000001000000000000a000c000a00090004000a00000010000000000104000800080000000400",
            "080000000400000000000000002f00001000140010000e000f00040000000800102000001c0000000c000000",
            "00000108180000000000000000000600080006000600000000000000010000006400000000000000ffffffff",
            "b8000000100000000c001a0018001700040008000c0000002000000080000000000000000000000000000003",
            "04000a0018000c00080004000a0000002c000000100000000301000008000000000000000100000003000000",
            "0000000000000000000000000000000002000000000000000000000001000000000000004000000000000000",
            "0c00000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000ff00000000000000000000000000000000000000000000000000000000000000",
            "00000000000000000000000000000000000000000000000000000000000000000000ab00f82a0000ffffffff",
            "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            "0008000000000000ffffffff00000000",
        ]
        .concat();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes.len(), 456);
        match decode_batches_from(Bytes::from(bytes), "exchange", 3) {
            Err(FrameError::MalformedPeerData {
                rank: 3, reason, ..
            }) => {
                assert!(reason.contains("34359738627 rows"), "{reason}");
                assert!(reason.contains("over the limit"), "{reason}");
            }
            other => panic!("{:?}", other.map(|(_, b)| b.len())),
        }
        // Under the limit, rows of no columns still decode (their count is
        // all they carry).
        let schema = Arc::new(Schema::empty());
        let b = RecordBatch::try_new_with_options(
            Arc::clone(&schema),
            vec![],
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(5)),
        )
        .unwrap();
        let (_, got) = decode_batches(encode_batches(&schema, &[b]).unwrap()).unwrap();
        assert_eq!(got[0].num_rows(), 5);
    }

    /// Found by the `frame_ipc` fuzz target (an abort): a table with a
    /// struct column of no fields decoded, and Arrow's row encoder (the
    /// keys of sorts, joins, group-bys, set operations) panicked on it. Now
    /// such a key is an `Unsupported` error, and the received table is
    /// harmless.
    #[test]
    fn a_struct_of_no_fields_is_an_unsupported_key_not_a_panic() {
        use datafusion::arrow::array::StructArray;
        use datafusion::arrow::datatypes::{DataType, Fields};
        let st = StructArray::new_empty_fields(3, None);
        let t = Table::from_columns(vec![
            ("i", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("st", Arc::new(st) as ArrayRef),
        ])
        .unwrap();
        let empty = DataType::Struct(Fields::empty());
        for types in [vec![empty.clone()], vec![DataType::Int64, empty.clone()]] {
            match crate::local::keys::KeyEncoder::new(&types) {
                Err(FrameError::Unsupported { what, .. }) => {
                    assert!(what.contains("struct with no fields"), "{what}")
                }
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("{types:?} encoded"),
            }
        }
        let sorted = crate::local::sort::sort(&t, &[crate::SortKey::asc("st")]);
        assert!(sorted.is_err() || sorted.unwrap().num_rows() == 3);
        // What the fuzz target does with a received table: no panic.
        crate::fuzzing::ipc_received(&encode(&t).unwrap());
    }
}
