//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, and
//! free to change with the decoders they reach).

use crate::launch::pool::rank_done_of;
use crate::wire::{self, Dec, DoneMsg, Enc, RunMsg, DEFAULT_MAX_FRAME, MIN_MAX_FRAME};

/// The frames between the agent and a worker, read as both ends read them:
/// the length prefix against the message limit the first byte chooses,
/// then `Run` frames as a worker decodes them and `Done` frames as the
/// agent's reader thread does (down to the rank report). A message that
/// decodes encodes to bytes that decode to a message of the same bytes, and a `Done`
/// made to fit the limit fits it.
pub fn worker_frames(data: &[u8]) {
    let (sel, bytes) = match data.split_first() {
        Some((&s, rest)) => (s, rest),
        None => return,
    };
    let max = [
        MIN_MAX_FRAME,
        1 << 16,
        DEFAULT_MAX_FRAME,
        u64::from(u32::MAX),
    ][usize::from(sel & 3)];
    let mut r = std::io::Cursor::new(bytes);
    let mut buf = Vec::new();
    while let Ok(Some(kind)) = wire::read_frame(&mut r, &mut buf, max) {
        assert!(
            buf.len() as u64 + 5 <= max,
            "a frame over the limit was read"
        );
        match kind {
            wire::RUN => {
                let Ok(msg) = RunMsg::decode(&mut Dec::new(&buf)) else {
                    continue;
                };
                let mut e = Enc::new(wire::RUN);
                msg.encode(&mut e);
                let again = e.finish()[5..].to_vec();
                let back = RunMsg::decode(&mut Dec::new(&again)).expect("a re-encoded Run decodes");
                // Bytes, not messages: a NaN GPU fraction is not equal to itself.
                let mut e = Enc::new(wire::RUN);
                back.encode(&mut e);
                assert_eq!(&e.finish()[5..], &again[..], "Run round trip");
            }
            wire::DONE => {
                let Ok(msg) = DoneMsg::decode(&mut Dec::new(&buf)) else {
                    continue;
                };
                let mut e = Enc::new(wire::DONE);
                msg.encode(&mut e);
                let again = e.finish()[5..].to_vec();
                let back =
                    DoneMsg::decode(&mut Dec::new(&again)).expect("a re-encoded Done decodes");
                assert_eq!(back, msg, "Done round trip");
                let fitted = msg.clone().fit(max);
                let mut e = Enc::new(wire::DONE);
                fitted.encode(&mut e);
                assert!(e.len() <= max, "a fitted Done of {} bytes > {max}", e.len());
                let _ = rank_done_of(msg, max);
            }
            _ => {}
        }
    }
}

/// Inputs to start [`worker_frames`] from (the selector byte included): a
/// `Run` of a multi-rank task with GPUs and a tcp communicator, a `Done`
/// of each status, an `Exit`.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::wire::{Status, DONE, EXIT, RUN};
    let run = wire::sample_run();
    let mut frames = Vec::new();
    let mut e = Enc::new(RUN);
    run.encode(&mut e);
    frames.extend_from_slice(e.finish());
    for (status, payload) in [
        (Status::Ok, b"[3.0,12]".to_vec()),
        (Status::Error, b"no".to_vec()),
        (Status::Panic, b"boom".to_vec()),
        (Status::Comm, b"lost".to_vec()),
        (Status::TooLarge, (1u64 << 40).to_le_bytes().to_vec()),
    ] {
        let done = DoneMsg {
            task: 7,
            attempt: 1,
            rank: 2,
            exec_start: 10,
            exec_end: 20,
            comm_ns: 5,
            status,
            payload,
            usage: None,
        };
        let mut e = Enc::new(DONE);
        done.encode(&mut e);
        frames.extend_from_slice(e.finish());
    }
    frames.extend_from_slice(Enc::new(EXIT).finish());
    (0..4u8).map(|sel| [&[sel][..], &frames].concat()).collect()
}
