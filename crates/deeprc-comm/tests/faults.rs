//! Failure semantics of the tcp backend with real processes: a killed
//! rank, a hung rank, and hostile connections.

mod common;

use deeprc_comm::{tcp::TcpComm, Communicator, CommunicatorExt, ReduceOp};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

/// A hang detector: far above the 2 s timeout the ranks are given.
const DEADLINE: Duration = Duration::from_secs(60);

fn wait_for_file(path: &PathBuf) -> String {
    for _ in 0..6000 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

fn env(dir: &std::path::Path, role: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DEEPRC_TEST_ROLE", role.to_string()),
        ("DEEPRC_TEST_DIR", dir.display().to_string()),
        ("DEEPRC_TIMEOUT_MS", "2000".to_string()),
    ]
}

#[test]
fn killed_rank_fails_the_others_mid_collective() {
    let dir = common::temp_dir("kill");
    let store = dir.join("store").display().to_string();
    let mut kids = common::spawn_ranks(3, "fault_rank", &store, &env(&dir, "loop"));
    wait_for_file(&dir.join("looping"));
    let victim = kids.remove(2);
    let mut victim = victim;
    victim.kill().unwrap(); // SIGKILL in the middle of the all-reduce loop
    victim.wait().unwrap();
    for (r, k) in kids.into_iter().enumerate() {
        let (code, out, _) = common::wait_output(k, DEADLINE);
        assert_eq!(code, Some(0), "rank {r} did not end by itself: {out}");
        let line = common::result_line(&out);
        assert!(line.starts_with("err peer-failure"), "rank {r}: {line}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Nanoseconds since the epoch (comparable between processes).
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The `at_ns=` a rank printed with its error.
fn at_ns(line: &str) -> u128 {
    line.rsplit_once("at_ns=")
        .and_then(|(_, t)| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no at_ns in {line:?}"))
}

/// `true` while a process with this pid exists (a zombie included).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// kill -9 of one rank of four in the middle of a stream of all-to-alls
/// (1 MiB to every peer): the three others fail on their own, well within
/// the 2 s deadline, with an error naming rank 3, and no rank process is
/// left.
#[test]
fn killed_rank_mid_all_to_all_fails_every_other_rank_in_time_naming_it() {
    let dir = common::temp_dir("kill-a2a");
    let store = dir.join("store").display().to_string();
    let mut kids = common::spawn_ranks(4, "fault_rank", &store, &env(&dir, "a2a"));
    let pids: Vec<u32> = kids.iter().map(|k| k.id()).collect();
    wait_for_file(&dir.join("looping"));
    let mut victim = kids.remove(3);
    let killed = now_ns();
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    for (r, k) in kids.into_iter().enumerate() {
        let (code, out, _) = common::wait_output(k, DEADLINE);
        assert_eq!(code, Some(0), "rank {r} did not end by itself: {out}");
        let line = common::result_line(&out);
        assert!(line.starts_with("err peer-failure"), "rank {r}: {line}");
        assert!(
            line.contains("rank 3"),
            "rank {r} does not name rank 3: {line}"
        );
        let detect_ms = at_ns(&line).saturating_sub(killed) as f64 / 1e6;
        println!(
            "FAULT tcp all_to_all_v, 4 processes, rank 3 killed: rank {r} failed after \
             {detect_ms:.1} ms (deadline 2000 ms): {line}"
        );
        assert!(detect_ms < 2000.0, "rank {r} took {detect_ms} ms: {line}");
    }
    for (r, pid) in pids.into_iter().enumerate() {
        assert!(!alive(pid), "rank {r} (pid {pid}) is still there");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hung_rank_times_out_the_others() {
    let dir = common::temp_dir("hang");
    let store = dir.join("store").display().to_string();
    let mut kids = common::spawn_ranks(3, "fault_rank", &store, &env(&dir, "hang"));
    let mut sleeper = kids.remove(2);
    for (r, k) in kids.into_iter().enumerate() {
        let (code, out, _) = common::wait_output(k, DEADLINE);
        assert_eq!(code, Some(0), "rank {r}: {out}");
        let line = common::result_line(&out);
        assert!(line.starts_with("err peer-failure"), "rank {r}: {line}");
        assert!(line.contains("timed out"), "rank {r}: {line}");
    }
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sends raw bytes to a rank and returns whether the rank closed on us.
fn hostile(addr: &str, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

fn header(kind: u8, ctx: u64, tag: u64, len: u64) -> Vec<u8> {
    versioned_header(b'2', kind, ctx, tag, len)
}

/// A header of protocol version `v` (`b'1'`: the plaintext-token protocol).
fn versioned_header(v: u8, kind: u8, ctx: u64, tag: u64, len: u64) -> Vec<u8> {
    let mut h = vec![b'D', b'R', b'C', v];
    h.push(kind);
    h.extend_from_slice(&ctx.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn unauthenticated_and_oversized_frames_are_refused() {
    let dir = common::temp_dir("auth");
    let store = dir.join("store").display().to_string();
    let kids = common::spawn_ranks(2, "fault_rank", &store, &env(&dir, "auth"));
    let addr = wait_for_file(&dir.join("addr"));

    // 1. The old plaintext hello (protocol 1), even with the right token.
    let token = b"test-token-0123456789";
    let mut legacy = versioned_header(b'1', 1, 1, 2, token.len() as u64);
    legacy.extend_from_slice(token);
    assert!(hostile(&addr, &legacy), "a plaintext hello was not refused");
    // 1b. A hello that is not one of protocol 2 (a bare guessed token).
    let mut wrong = header(1, 1, 2, 5);
    wrong.extend_from_slice(b"guess");
    assert!(hostile(&addr, &wrong), "a malformed hello was not refused");
    // 2. A forged frame announcing 1 TiB.
    assert!(
        hostile(&addr, &header(0, 0, 0, 1 << 40)),
        "oversized frame was not refused"
    );
    // 3. Bytes that are not a frame at all.
    assert!(
        hostile(&addr, b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxxxxxxxx"),
        "garbage was not refused"
    );

    std::fs::write(dir.join("go"), "go").unwrap();
    for (r, k) in kids.into_iter().enumerate() {
        let (code, out, _) = common::wait_output(k, DEADLINE);
        assert_eq!(code, Some(0), "rank {r}: {out}");
        let line = common::result_line(&out);
        if r == 0 {
            assert!(
                line.starts_with("ok sum=3 refusals=4"),
                "rank 0: {line}\n{out}"
            );
            assert!(line.contains("protocol version 1"), "{line}");
            assert!(line.contains("Hello of 5 bytes"), "{line}");
            assert!(line.contains("exceeds the limit"), "{line}");
            assert!(line.contains("bad magic"), "{line}");
        } else {
            assert!(line.starts_with("ok sum=3"), "rank {r}: {line}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[ignore = "entry point of the rank processes of the fault tests"]
fn fault_rank() {
    if !common::is_rank_process() {
        return;
    }
    let dir = PathBuf::from(std::env::var("DEEPRC_TEST_DIR").unwrap());
    let role = std::env::var("DEEPRC_TEST_ROLE").unwrap();
    let comm = TcpComm::from_env().unwrap();
    let outcome = match role.as_str() {
        "loop" => (|| {
            let mut v = vec![1.0f64; 1 << 17];
            for i in 0.. {
                comm.all_reduce(&mut v, ReduceOp::Max)?;
                if i == 3 && comm.rank() == 0 {
                    std::fs::write(dir.join("looping"), "yes").unwrap();
                }
            }
            Ok(String::new())
        })(),
        "a2a" => (|| {
            let n = comm.size();
            for i in 0.. {
                let parts: Vec<bytes::Bytes> = (0..n)
                    .map(|j| bytes::Bytes::from(vec![(i % 251) as u8 ^ j as u8; 1 << 20]))
                    .collect();
                let got = comm.all_to_all_v(parts)?;
                assert!(got.iter().all(|b| b.len() == 1 << 20));
                if i == 3 && comm.rank() == 0 {
                    std::fs::write(dir.join("looping"), "yes").unwrap();
                }
            }
            Ok(String::new())
        })(),
        "hang" => {
            if comm.rank() == 2 {
                std::thread::sleep(Duration::from_secs(3600));
            }
            comm.all_reduce_scalar(1u32, ReduceOp::Sum)
                .map(|s| s.to_string())
        }
        "auth" => {
            if comm.rank() == 0 {
                std::fs::write(dir.join("addr"), comm.listen_addr().to_string()).unwrap();
            }
            wait_for_file(&dir.join("go"));
            comm.all_reduce_scalar(comm.rank() as u32 + 1, ReduceOp::Sum)
                .map(|s| {
                    let refusals = comm.refusals();
                    format!(
                        "sum={s} refusals={} {}",
                        refusals.len(),
                        refusals.join(" | ")
                    )
                })
        }
        other => panic!("unknown role {other}"),
    };
    match outcome {
        Ok(s) => println!("RESULT ok {s}"),
        Err(e) if e.is_peer_failure() => {
            println!("RESULT err peer-failure {e} at_ns={}", now_ns())
        }
        Err(e) => println!("RESULT err other {e} at_ns={}", now_ns()),
    }
}
