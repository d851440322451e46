//! Mutual challenge-response authentication of tcp connections. The rank
//! mesh and the rendezvous store use the same handshake; the job token
//! never crosses the wire.
//!
//! ```text
//!  dialer (client)                                 listener (server)
//!  Hello     purpose, rank, size, target, Nc  ---->
//!                                            <----  Challenge  purpose, rank, Ns
//!  Proof     HMAC(token, T || "client")       ---->  verified (constant time),
//!                                                    then rank and size checked
//!  verified (constant time)                  <----  Ack  HMAC(token, T || "server")
//!
//!  T = "deeprc-comm/tcp-auth" || version || Hello body || Challenge body
//!  Nc, Ns: 32 fresh random bytes from the operating system
//! ```
//!
//! Every frame carries the protocol version in its magic (`DRC2`), and the
//! MACs cover it too. Both nonces make every transcript unique (no replay);
//! the role suffix keeps either side's MAC from being reflected as the
//! other's. The dialer proves first: the listener's port is open to anyone,
//! so it only answers with its own MAC to a peer that has already proven it
//! knows the token. Neither side reads or writes a payload byte before the
//! handshake is over: the listener hands a connection to the mesh (or
//! serves store requests) only after the proof verified, and the dialer
//! uses it only after the listener's MAC verified.
//!
//! This authenticates; it does not encrypt. Payloads after the handshake
//! travel in clear and without a per-message MAC (the all-reduce hot path
//! stays a plain socket write).

use super::wire::{self, Kind, AUTH_LIMIT, PROTOCOL_VERSION};
use crate::{CommError, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::{
    io::{self, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: MACs of this handshake are good for nothing else.
const CONTEXT: &[u8] = b"deeprc-comm/tcp-auth";
const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
/// purpose u8, rank u64, size u64, target u64, nonce.
const HELLO_LEN: usize = 1 + 8 + 8 + 8 + NONCE_LEN;
/// purpose u8, rank u64, nonce.
const CHALLENGE_LEN: usize = 1 + 8 + NONCE_LEN;

/// What a connection is for: a mesh listener refuses store clients and the
/// other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Purpose {
    /// A rank dialing another rank.
    Mesh = 1,
    /// A client of the rendezvous store.
    Store = 2,
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Mesh => "rank",
            Purpose::Store => "store client",
        }
    }
}

/// Who the dialer says it is (covered by the MACs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The dialer's rank (0 for store clients).
    pub(crate) rank: u64,
    /// The dialer's world size (0 for store clients).
    pub(crate) size: u64,
    /// The rank the dialer means to reach (0 for the store).
    pub(crate) target: u64,
}

/// A connection whose reads and writes all end by one deadline: a dialer
/// that trickles its handshake byte by byte cannot hold a handshake open
/// for longer than the timeout.
#[derive(Debug)]
pub(crate) struct Bounded<'a> {
    conn: &'a mut TcpStream,
    /// `None`: a timeout too large for an `Instant` (no deadline).
    until: Option<Instant>,
}

impl<'a> Bounded<'a> {
    pub(crate) fn new(conn: &'a mut TcpStream, within: Duration) -> Self {
        Self {
            conn,
            until: Instant::now().checked_add(within),
        }
    }

    /// The time left, as a socket timeout; an error once it is over.
    fn left(&self) -> io::Result<Option<Duration>> {
        let Some(until) = self.until else {
            return Ok(None);
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake did not finish in time",
            ));
        }
        Ok(Some(left))
    }
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.conn.set_read_timeout(left)?;
        self.conn.read(buf)
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.conn.set_write_timeout(left)?;
        self.conn.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.flush()
    }
}

fn nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut n).map_err(|e| {
        CommError::io(
            "drawing a handshake nonce from the operating system",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(n)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The MAC of one side over the transcript.
fn mac(
    token: &[u8],
    hello: &[u8; HELLO_LEN],
    challenge: &[u8; CHALLENGE_LEN],
    role: &[u8],
) -> Result<HmacSha256> {
    // HMAC takes keys of any length; the error is for other MACs of the trait.
    let mut m = <HmacSha256 as Mac>::new_from_slice(token)
        .map_err(|e| CommError::config("DEEPRC_TOKEN", format!("not usable as a key: {e}")))?;
    m.update(CONTEXT);
    m.update(&[PROTOCOL_VERSION]);
    m.update(hello);
    m.update(challenge);
    m.update(role);
    Ok(m)
}

/// Reads one handshake frame of `kind` and exactly `N` bytes. `Ok(None)`:
/// the peer closed the connection before it.
fn read_exact_frame<const N: usize>(
    conn: &mut impl Read,
    kind: Kind,
    from: &str,
) -> Result<Option<[u8; N]>> {
    let Some(h) = wire::read_header(conn, AUTH_LIMIT, from)? else {
        return Ok(None);
    };
    if h.kind != kind {
        return Err(CommError::Auth {
            addr: from.to_string(),
            reason: format!("sent a {:?} frame where a {kind:?} belongs", h.kind),
        });
    }
    let body = wire::read_body(conn, h.len, from)?;
    let got = body.len();
    body.try_into()
        .map(Some)
        .map_err(|_| CommError::MalformedFrame {
            from: from.to_string(),
            reason: format!("{kind:?} of {got} bytes, expected {N}"),
        })
}

fn send(conn: &mut impl Write, kind: Kind, body: &[u8], to: &str) -> Result<()> {
    wire::write_frame(conn, kind, 0, 0, body)
        .and_then(|_| conn.flush())
        .map_err(|e| CommError::io(format!("sending a {kind:?} to {to}"), e))
}

/// The dialer's side: proves that this side knows `token`, checks that the
/// listener does too, and that it is rank `claim.target`. Returns only once
/// both proofs verified; on error the connection must be dropped.
pub(crate) fn client<S: Read + Write>(
    conn: &mut S,
    token: &[u8],
    purpose: Purpose,
    claim: Claim,
    addr: &str,
) -> Result<()> {
    let refused = |reason: String| CommError::Auth {
        addr: addr.to_string(),
        reason,
    };
    let mut hello = [0u8; HELLO_LEN];
    hello[0] = purpose as u8;
    hello[1..9].copy_from_slice(&claim.rank.to_le_bytes());
    hello[9..17].copy_from_slice(&claim.size.to_le_bytes());
    hello[17..25].copy_from_slice(&claim.target.to_le_bytes());
    hello[25..].copy_from_slice(&nonce()?);
    send(conn, Kind::Hello, &hello, addr)?;

    let challenge: [u8; CHALLENGE_LEN] = read_exact_frame(conn, Kind::Challenge, addr)?
        .ok_or_else(|| refused("closed the connection instead of sending a challenge".into()))?;
    if challenge[0] != purpose as u8 {
        return Err(refused(format!(
            "is not a {} listener (purpose {} in its challenge)",
            purpose.name(),
            challenge[0]
        )));
    }
    let their_rank = u64_at(&challenge, 1);
    if purpose == Purpose::Mesh && their_rank != claim.target {
        return Err(refused(format!(
            "is rank {their_rank}, not rank {}",
            claim.target
        )));
    }
    let proof = mac(token, &hello, &challenge, b"client")?
        .finalize()
        .into_bytes();
    send(conn, Kind::Proof, &proof, addr)?;

    let ack: [u8; MAC_LEN] = read_exact_frame(conn, Kind::Ack, addr)?.ok_or_else(|| {
        refused(
            "refused this side's proof (a different job token, or a rank or world size \
             that does not fit)"
                .into(),
        )
    })?;
    mac(token, &hello, &challenge, b"server")?
        .verify_slice(&ack)
        .map_err(|_| {
            refused("did not prove that it knows the job token (not a rank of this job)".into())
        })
}

/// A dialer whose proof verified; the listener answers with [`accept`]
/// once it has checked the claim.
///
/// [`accept`]: Verified::accept
#[derive(Debug)]
pub(crate) struct Verified {
    /// Who the dialer is (authenticated).
    pub(crate) claim: Claim,
    hello: [u8; HELLO_LEN],
    challenge: [u8; CHALLENGE_LEN],
}

impl Verified {
    /// Proves this side's knowledge of the token to the dialer: after this
    /// the connection carries payloads.
    pub(crate) fn accept(self, conn: &mut impl Write, token: &[u8], to: &str) -> Result<()> {
        let m = mac(token, &self.hello, &self.challenge, b"server")?
            .finalize()
            .into_bytes();
        send(conn, Kind::Ack, &m, to)
    }
}

/// The listener's side, up to the dialer's proof: reads the hello, sends a
/// challenge and verifies the proof in constant time. Nothing of the
/// listener's state (nor any MAC of its own) reaches a dialer that fails.
pub(crate) fn server<S: Read + Write>(
    conn: &mut S,
    token: &[u8],
    purpose: Purpose,
    rank: u64,
    from: &str,
) -> Result<Verified> {
    let refused = |reason: String| CommError::Auth {
        addr: from.to_string(),
        reason,
    };
    let hello: [u8; HELLO_LEN] =
        read_exact_frame(conn, Kind::Hello, from)?.ok_or_else(|| CommError::MalformedFrame {
            from: from.to_string(),
            reason: "closed before its hello".into(),
        })?;
    if hello[0] != purpose as u8 {
        return Err(refused(format!(
            "a hello of purpose {} on a {} port",
            hello[0],
            purpose.name()
        )));
    }
    let mut challenge = [0u8; CHALLENGE_LEN];
    challenge[0] = purpose as u8;
    challenge[1..9].copy_from_slice(&rank.to_le_bytes());
    challenge[9..].copy_from_slice(&nonce()?);
    send(conn, Kind::Challenge, &challenge, from)?;

    let proof: [u8; MAC_LEN] = read_exact_frame(conn, Kind::Proof, from)?
        .ok_or_else(|| refused("closed before its proof".into()))?;
    mac(token, &hello, &challenge, b"client")?
        .verify_slice(&proof)
        .map_err(|_| refused("wrong job token (its proof does not verify)".into()))?;
    Ok(Verified {
        claim: Claim {
            rank: u64_at(&hello, 1),
            size: u64_at(&hello, 9),
            target: u64_at(&hello, 17),
        },
        hello,
        challenge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        net::{TcpListener, TcpStream},
        thread,
    };

    /// Runs the server side on a thread; returns the client's and server's results.
    fn handshake(
        client_token: &'static str,
        server_token: &'static str,
        purposes: (Purpose, Purpose),
        server_rank: u64,
    ) -> (Result<()>, Result<Claim>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let srv = thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let v = server(
                &mut c,
                server_token.as_bytes(),
                purposes.1,
                server_rank,
                "t",
            )?;
            let claim = v.claim;
            v.accept(&mut c, server_token.as_bytes(), "t")?;
            Ok(claim)
        });
        let mut c = TcpStream::connect(&addr).unwrap();
        let claim = Claim {
            rank: 3,
            size: 4,
            target: 1,
        };
        let out = client(&mut c, client_token.as_bytes(), purposes.0, claim, &addr);
        drop(c);
        (out, srv.join().unwrap())
    }

    #[test]
    fn both_sides_prove_the_token() {
        let mesh = (Purpose::Mesh, Purpose::Mesh);
        let (c, s) = handshake("tok", "tok", mesh, 1);
        c.unwrap();
        assert_eq!(
            s.unwrap(),
            Claim {
                rank: 3,
                size: 4,
                target: 1
            }
        );
        // Wrong token: the server refuses the proof, the client sees no ack.
        let (c, s) = handshake("guess", "tok", mesh, 1);
        assert!(matches!(c, Err(CommError::Auth { .. })), "{c:?}");
        assert!(
            matches!(&s, Err(CommError::Auth { reason, .. }) if reason.contains("wrong job token")),
            "{s:?}"
        );
        // The listener is another rank than the one dialed.
        let (c, _) = handshake("tok", "tok", mesh, 2);
        assert!(
            matches!(&c, Err(CommError::Auth { reason, .. }) if reason.contains("not rank 1")),
            "{c:?}"
        );
        // A store client on a rank's port.
        let (_, s) = handshake("tok", "tok", (Purpose::Store, Purpose::Mesh), 1);
        assert!(matches!(s, Err(CommError::Auth { .. })), "{s:?}");
    }

    #[test]
    fn macs_depend_on_every_input() {
        let (h, c) = ([1u8; HELLO_LEN], [2u8; CHALLENGE_LEN]);
        let m = |t: &[u8], h, c, r: &[u8]| mac(t, h, c, r).unwrap();
        let base = m(b"tok", &h, &c, b"client").finalize().into_bytes();
        let mut h2 = h;
        h2[30] ^= 1;
        let mut c2 = c;
        c2[20] ^= 1;
        for other in [
            m(b"tok", &h2, &c, b"client"),
            m(b"tok", &h, &c2, b"client"),
            m(b"tok", &h, &c, b"server"),
            m(b"tok2", &h, &c, b"client"),
        ] {
            assert!(other.verify_slice(&base).is_err());
        }
        assert!(m(b"tok", &h, &c, b"client").verify_slice(&base).is_ok());
    }
}
