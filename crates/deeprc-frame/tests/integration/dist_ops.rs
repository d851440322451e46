//! Every distributed operator against the local operator on the
//! concatenated table, for 1 to 7 ranks, uneven and empty partitions, and a
//! key holding 90% of the rows; over threads (and tcp, see `backends`).

use super::common::*;
use super::local_ops::ALL_JOINS;
use deeprc_comm::Communicator;
use deeprc_frame::datafusion::scalar::ScalarValue;
use deeprc_frame::prelude::*;
use deeprc_frame::FrameError;
use std::sync::Arc;

/// The inputs of one battery run: two global tables and how they are split.
pub(crate) struct Case {
    pub(crate) a: Table,
    pub(crate) b: Table,
    pub(crate) a_parts: Vec<Table>,
    pub(crate) b_parts: Vec<Table>,
}

/// A deterministic case for `n` ranks (process ranks rebuild it from the seed).
pub(crate) fn case(seed: u64, n: usize) -> Case {
    let mut r = rng(seed * 1000 + n as u64);
    let g = match seed % 3 {
        0 => Gen::new(240).keys(30),
        1 => Gen::new(160).skew(0.9).keys(40),
        _ => Gen::new(90).keys(6).nulls(0.3),
    };
    let a = gen_table(&mut r, g);
    let b = gen_table(
        &mut r,
        Gen {
            rows: g.rows / 2,
            ..g
        },
    );
    let a_parts = split(&mut r, &a, n);
    let b_parts = split(&mut r, &b, n);
    Case {
        a,
        b,
        a_parts,
        b_parts,
    }
}

fn on_root(d: &DistTable) -> Result<Option<Table>, FrameError> {
    d.gather(0)
}

/// Runs every distributed operator on this rank's partitions and checks
/// the results on rank 0 against the local operators on the whole tables.
/// Returns the number of checks.
pub(crate) fn battery(comm: Arc<dyn Communicator>, c: &Case) -> Result<usize, FrameError> {
    battery_with(comm, c, DistOptions::default())
}

/// [`battery`] on tables with the tuning knobs `options`.
pub(crate) fn battery_with(
    comm: Arc<dyn Communicator>,
    c: &Case,
    options: DistOptions,
) -> Result<usize, FrameError> {
    let r = comm.rank();
    let n = comm.size();
    let a = DistTable::new(c.a_parts[r].clone(), Arc::clone(&comm))?.with_options(options);
    let b = DistTable::new(c.b_parts[r].clone(), Arc::clone(&comm))?.with_options(options);
    let checks = std::cell::Cell::new(0usize);
    let check = |what: &str, got: Option<Table>, want: &dyn Fn() -> Table| {
        if let Some(got) = got {
            assert_same_rows(&got, &want(), &format!("{what} on {n} ranks"));
        }
        checks.set(checks.get() + 1);
    };

    // Movement.
    let sh = a.shuffle(&["k", "s"])?;
    check("shuffle", on_root(&sh)?, &|| c.a.clone());
    // Every (k, s) on one rank: no pair in two partitions.
    let pairs = sh
        .partition()
        .unique(&UniqueOptions::subset(&["k", "s"]))?
        .project(&["k", "s"])?;
    let all_pairs = DistTable::new(pairs, Arc::clone(&comm))?;
    let total = all_pairs.num_rows()?;
    let distinct = all_pairs.unique(&UniqueOptions::default())?.num_rows()?;
    assert_eq!(total, distinct, "shuffle split a key over ranks");

    let even = a.repartition(None)?;
    let counts = even.row_counts()?;
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    assert!(even.equals(&a)?, "repartition keeps the global order");
    let total_rows = a.num_rows()?;
    let mut want_counts = vec![0u64; n];
    want_counts[n - 1] = total_rows;
    let skewed = a.repartition(Some(&want_counts))?;
    assert_eq!(skewed.row_counts()?, want_counts);
    assert!(skewed.equals(&a)?);
    let all = a.all_gather()?;
    assert!(all.equals(&c.a)?, "all_gather");
    let bc = a.broadcast(n - 1)?;
    assert!(bc.equals(&c.a_parts[n - 1])?, "broadcast");
    if let Some(g) = a.gather(0)? {
        assert!(g.equals(&c.a)?, "gather keeps rank order");
    }

    // Joins.
    for how in ALL_JOINS {
        let o = JoinOptions::on(&["k", "s"]).how(how);
        let j = a.join(&b, &o)?;
        check(&format!("join {how:?}"), on_root(&j)?, &|| {
            c.a.join(&c.b, &o).unwrap()
        });
    }
    let o = JoinOptions::on_columns(&["i"], &["i"])
        .how(JoinType::FullOuter)
        .algorithm(JoinAlgorithm::SortMerge);
    let ab = a.project(&["i", "id"])?;
    let bb = b.project(&["i", "f"])?;
    let j = ab.join(&bb, &o)?;
    check("sort-merge join", on_root(&j)?, &|| {
        c.a.project(&["i", "id"])
            .unwrap()
            .join(&c.b.project(&["i", "f"]).unwrap(), &o)
            .unwrap()
    });

    // Sort: a global order and the same rows.
    for keys in [
        vec![SortKey::asc("k")],
        vec![SortKey::desc("f")],
        vec![SortKey::asc("t").nulls_first()],
        vec![SortKey::asc("s"), SortKey::desc("k").nulls_last()],
    ] {
        let s = a.sort(&keys)?;
        if let Some(got) = on_root(&s)? {
            let want = c.a.sort(&keys)?;
            for k in &keys {
                assert_eq!(
                    got.column(&k.column)?.to_data(),
                    want.column(&k.column)?.to_data(),
                    "sort {keys:?} on {n} ranks: column {}",
                    k.column
                );
            }
            assert!(got.equals_unordered(&c.a)?);
        }
        checks.set(checks.get() + 1);
    }

    // Group-by: decomposable (pre-aggregated), non-decomposable, no keys.
    let assoc = vec![
        Agg::sum("f"),
        Agg::sum("i"),
        Agg::min("f"),
        Agg::max("t"),
        Agg::count("s"),
        Agg::mean("f"),
        Agg::var("f"),
        Agg::std("i"),
    ];
    let holistic = vec![
        Agg::nunique("s"),
        Agg::quantile("f", 0.3),
        Agg::max("s"),
        Agg::sum("f"),
    ];
    for keys in [vec!["k"], vec!["s", "i"], vec![]] {
        for aggs in [&assoc, &holistic] {
            let g = a.group_by(&keys, aggs)?;
            check(&format!("group by {keys:?}"), on_root(&g)?, &|| {
                c.a.group_by(&keys, aggs).unwrap()
            });
        }
    }

    // Unique and set operations.
    let ak = a.project(&["k", "s"])?;
    let bk = b.project(&["k", "s"])?;
    let (ck_a, ck_b) = (c.a.project(&["k", "s"])?, c.b.project(&["k", "s"])?);
    check(
        "unique",
        on_root(&ak.unique(&UniqueOptions::default())?)?,
        &|| ck_a.unique(&UniqueOptions::default()).unwrap(),
    );
    let u = a.unique(&UniqueOptions::subset(&["k"]).keep_last())?;
    check("unique keep last", on_root(&u)?, &|| {
        c.a.unique(&UniqueOptions::subset(&["k"]).keep_last())
            .unwrap()
    });
    check("union", on_root(&ak.union(&bk)?)?, &|| {
        ck_a.union(&ck_b).unwrap()
    });
    check("intersect", on_root(&ak.intersect(&bk)?)?, &|| {
        ck_a.intersect(&ck_b).unwrap()
    });
    check("subtract", on_root(&ak.subtract(&bk)?)?, &|| {
        ck_a.subtract(&ck_b).unwrap()
    });

    // Global slices.
    let rows = c.a.num_rows();
    for (off, len) in [
        (0, 5),
        (rows as u64 / 3, 17),
        (rows as u64 - 1, 10),
        (rows as u64 + 5, 3),
    ] {
        let s = a.slice(off, len)?;
        if let Some(got) = on_root(&s)? {
            assert!(
                got.equals(&c.a.slice(off as usize, len as usize))?,
                "slice {off} {len}"
            );
        }
    }
    if let Some(h) = on_root(&a.head(7)?)? {
        assert!(h.equals(&c.a.head(7))?);
    }
    if let Some(t) = on_root(&a.tail(9)?)? {
        assert!(t.equals(&c.a.tail(9))?);
    }

    // Equality.
    let sorted = a.sort(&[SortKey::desc("id")])?;
    assert!(a.equals(&a.repartition(None)?)?);
    assert_eq!(a.equals(&sorted)?, c.a.num_rows() <= 1);
    assert!(a.equals_unordered(&sorted)?);
    assert!(!a.equals_unordered(&a.head(rows as u64 - 1)?)?);

    // Scalar reductions.
    let fv: Vec<f64> = c.a.column_as::<f64>("f")?.into_iter().flatten().collect();
    assert_eq!(a.count(None)?, rows as u64);
    assert_eq!(a.count(Some("f"))?, fv.len() as u64);
    let want_sum: f64 = fv.iter().sum();
    assert_eq!(
        a.sum("f")?,
        ScalarValue::Float64((!fv.is_empty()).then_some(want_sum))
    );
    let iv: Vec<i64> = c.a.column_as::<i64>("i")?.into_iter().flatten().collect();
    assert_eq!(a.sum("i")?, ScalarValue::Int64(Some(iv.iter().sum())));
    assert_eq!(
        a.min("k")?,
        ScalarValue::Int64(c.a.column_as::<i64>("k")?.into_iter().flatten().min())
    );
    let tmax = c.a.group_by(&[], &[Agg::max("t")])?.column("t_max")?;
    assert_eq!(a.max("t")?, ScalarValue::try_from_array(&tmax, 0).unwrap());
    if !fv.is_empty() {
        let m = want_sum / fv.len() as f64;
        assert!((a.mean("f")?.unwrap() - m).abs() < 1e-9);
        if fv.len() > 1 {
            let v = fv.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (fv.len() - 1) as f64;
            assert!((a.var("f")?.unwrap() - v).abs() < 1e-6 * v.max(1.0));
        }
    }
    Ok(checks.get())
}

#[test]
fn every_operator_on_1_to_7_thread_ranks() {
    for n in 1..=7 {
        for seed in 0..3 {
            let c = case(seed, n);
            let out = on_threads_comm(n, |comm| battery(comm, &c));
            for (r, res) in out.into_iter().enumerate() {
                let k = res.unwrap_or_else(|e| panic!("seed {seed}, {n} ranks, rank {r}: {e}"));
                assert!(k > 20);
            }
        }
    }
}

#[test]
fn empty_tables_on_every_rank() {
    for n in [1, 3] {
        let empty = gen_table(&mut rng(1), Gen::new(0));
        let c = Case {
            a: empty.clone(),
            b: empty.clone(),
            a_parts: vec![empty.clone(); n],
            b_parts: vec![empty.clone(); n],
        };
        let out = on_threads_comm(n, |comm| {
            let a = DistTable::new(c.a_parts[comm.rank()].clone(), Arc::clone(&comm))?;
            let s = a.sort(&[SortKey::asc("k")])?;
            let j = a.join(&a, &JoinOptions::on(&["k"]).how(JoinType::FullOuter))?;
            let g = a.group_by(&["k"], &[Agg::sum("f")])?;
            let g0 = a.group_by(&[], &[Agg::count("f"), Agg::sum("f")])?;
            Ok((s.num_rows()?, j.num_rows()?, g.num_rows()?, g0.gather(0)?))
        });
        for (r, res) in out.into_iter().enumerate() {
            let (s, j, g, g0) = res.unwrap();
            assert_eq!((s, j, g), (0, 0, 0));
            if r == 0 {
                let g0 = g0.unwrap();
                assert_eq!(g0.num_rows(), 1);
                assert_eq!(g0.column_as::<i64>("f_count").unwrap(), vec![Some(0)]);
                assert_eq!(g0.column_as::<f64>("f_sum").unwrap(), vec![None]);
            }
        }
    }
}

#[test]
fn sort_balances_a_key_holding_most_rows() {
    let n = 4;
    let t = gen_table(&mut rng(3), Gen::new(4000).skew(0.9).nulls(0.0));
    let parts = split(&mut rng(4), &t, n);
    let counts = on_threads(&parts, |d| {
        let s = d.sort(&[SortKey::asc("k")])?;
        s.row_counts()
    });
    // 90% of the rows share one key; it must be spread over several ranks.
    let c = &counts[0];
    assert!(c.iter().max().unwrap() < &3000, "{c:?}");
}

#[test]
fn scatter_from_root_spreads_evenly_in_order() {
    let t = gen_table(&mut rng(8), Gen::new(101));
    for n in [1, 2, 4, 7] {
        let out = on_threads_comm(n, |comm| {
            let mine = (comm.rank() == 0).then(|| t.clone());
            let d = DistTable::scatter(mine, 0, Arc::clone(&comm))?;
            Ok((d.row_counts()?, d.gather(0)?))
        });
        for (r, res) in out.into_iter().enumerate() {
            let (counts, g) = res.unwrap();
            assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            if r == 0 {
                assert!(g.unwrap().equals(&t).unwrap());
            }
        }
    }
}

#[test]
fn bucketed_join_and_sort_with_small_buckets() {
    // Buckets of 16 rows: join and sort run bucket by bucket even on 1 rank.
    // The option travels with the tables, so this test shares nothing with
    // the others running beside it.
    let small = DistOptions::default().bucket_rows(16);
    for n in [1, 2, 3] {
        for seed in 0..3 {
            let c = case(seed + 20, n);
            for (r, res) in on_threads_comm(n, |comm| battery_with(comm, &c, small))
                .into_iter()
                .enumerate()
            {
                res.unwrap_or_else(|e| panic!("seed {seed}, {n} ranks, rank {r}: {e}"));
            }
        }
    }
    for n in [2, 3] {
        let c = case(30 + n as u64, n);
        for (r, res) in on_tcp_threads(n, |comm| battery_with(comm, &c, small))
            .into_iter()
            .enumerate()
        {
            res.unwrap_or_else(|e| panic!("tcp, {n} ranks, rank {r}: {e}"));
        }
    }
}
