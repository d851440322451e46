//! Distributed SQL against DataFusion on the concatenated tables.

use super::common::*;
use super::dist_ops::case;
use deeprc_comm::Communicator;
use deeprc_frame::{sql, DistTable, FrameContext, FrameError, Table};
use std::sync::Arc;

const UNORDERED: &[&str] = &[
    "SELECT id, k * 2 AS k2 FROM t WHERE f > 0",
    "SELECT k, sum(f) AS s, count(*) AS c, avg(f) AS m FROM t GROUP BY k",
    "SELECT count(*) AS c, sum(f) AS s, max(s) AS ms FROM t",
    "SELECT a.id, b.id AS bid, a.k FROM t a JOIN u b ON a.k = b.k AND a.s = b.s WHERE a.f > b.f",
    "SELECT s, count(DISTINCT k) AS nk FROM t GROUP BY s",
    "SELECT DISTINCT s FROM t",
    "SELECT t.k, sum(u.f) AS s FROM t JOIN u ON t.k = u.k GROUP BY t.k",
    "SELECT id FROM t WHERE k IN (SELECT k FROM u WHERE f > 10)",
    "SELECT id, rank() OVER (PARTITION BY s ORDER BY id) AS r FROM t",
    "SELECT t.id, u.id AS uid FROM t LEFT JOIN u ON t.i = u.k",
    "SELECT id FROM t UNION ALL SELECT id FROM u",
    "SELECT 1 AS one",
];

const ORDERED: &[&str] = &[
    "SELECT id, k FROM t ORDER BY k DESC NULLS LAST, id",
    "SELECT id, s FROM t ORDER BY s, id LIMIT 5 OFFSET 3",
    "SELECT k, count(*) AS c FROM t GROUP BY k ORDER BY c DESC, k",
    "SELECT id FROM t ORDER BY id DESC LIMIT 7",
];

fn run_all(comm: Arc<dyn Communicator>, seed: u64) -> Result<Vec<Option<Table>>, FrameError> {
    let n = comm.size();
    let c = case(seed, n);
    let r = comm.rank();
    let ctx = FrameContext::new()?;
    let t = DistTable::new(c.a_parts[r].clone(), Arc::clone(&comm))?;
    let u = DistTable::new(c.b_parts[r].clone(), Arc::clone(&comm))?;
    let mut out = Vec::new();
    for q in UNORDERED.iter().chain(ORDERED) {
        let d = sql::sql(&ctx, &[("t", &t), ("u", &u)], q)?;
        out.push(d.gather(0)?);
    }
    // Partition-wise SQL.
    let local = t.sql_local(&ctx, "t", "SELECT id FROM t WHERE k < 3")?;
    out.push(local.gather(0)?);
    Ok(out)
}

fn check(results: Vec<Option<Table>>, seed: u64, n: usize) {
    let c = case(seed, n);
    let tabs = [("t", &c.a), ("u", &c.b)];
    for (i, q) in UNORDERED.iter().enumerate() {
        let want = df_sql(&tabs, q);
        let got = results[i].as_ref().unwrap();
        assert_same_rows(got, &want, &format!("{q} on {n} ranks"));
    }
    for (j, q) in ORDERED.iter().enumerate() {
        let want = df_sql(&tabs, q);
        let got = results[UNORDERED.len() + j].as_ref().unwrap();
        assert!(
            got.equals(&want).unwrap(),
            "{q} on {n} ranks:\n{}\n{}",
            got.pretty().unwrap(),
            want.pretty().unwrap()
        );
    }
    let want = df_sql(&tabs, "SELECT id FROM t WHERE k < 3");
    assert!(results
        .last()
        .unwrap()
        .as_ref()
        .unwrap()
        .equals(&want)
        .unwrap());
}

#[test]
fn distributed_sql_matches_datafusion_on_threads() {
    for n in [1, 2, 3, 5] {
        for seed in [0, 1] {
            let out = on_threads_comm(n, |comm| run_all(comm, seed));
            let root = out.into_iter().next().unwrap().unwrap();
            check(root, seed, n);
        }
    }
}

#[test]
fn distributed_sql_matches_datafusion_on_tcp() {
    let n = 3;
    let out = on_tcp_threads(n, |comm| run_all(comm, 2));
    let mut it = out.into_iter();
    let root = it.next().unwrap().unwrap();
    for r in it {
        r.unwrap();
    }
    check(root, 2, n);
}

#[test]
fn sql_errors_are_typed_and_the_same_everywhere() {
    let out = on_threads_comm(3, |comm| {
        let c = case(0, 3);
        let t = DistTable::new(c.a_parts[comm.rank()].clone(), Arc::clone(&comm))?;
        let ctx = FrameContext::new()?;
        Ok(sql::sql(&ctx, &[("t", &t)], "SELECT nope FROM t").unwrap_err())
    });
    for r in out {
        assert!(matches!(r.unwrap(), FrameError::DataFusion { .. }));
    }
}
