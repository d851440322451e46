//! Local operators against DataFusion SQL on generated tables.

use super::common::*;
use deeprc_frame::prelude::*;

const SEEDS: [u64; 4] = [1, 2, 3, 4];

fn gens() -> Vec<Gen> {
    vec![
        Gen::new(0),
        Gen::new(1),
        Gen::new(200),
        Gen::new(300).skew(0.9).keys(50),
        Gen::new(150).nulls(0.0).keys(1000),
    ]
}

#[test]
fn project_filter_with_column_match_datafusion() {
    for seed in SEEDS {
        let t = gen_table(&mut rng(seed), Gen::new(300));
        let got = t
            .filter_sql("f > 0 AND s IS NOT NULL")
            .unwrap()
            .with_column_sql("g", "k * 2 + i")
            .unwrap()
            .project(&["id", "g", "s"])
            .unwrap();
        let want = df_sql(
            &[("t", &t)],
            "SELECT id, k * 2 + i AS g, s FROM t WHERE f > 0 AND s IS NOT NULL",
        );
        assert_same_rows(&got, &want, "filter/project");
        let by_expr = t.filter(&col("k").lt(lit(5i64))).unwrap();
        let want = df_sql(&[("t", &t)], "SELECT * FROM t WHERE k < 5");
        assert_same_rows(&by_expr, &want, "filter expr");
    }
}

#[test]
fn sort_matches_datafusion_on_keys() {
    let cases: Vec<(Vec<SortKey>, &str)> = vec![
        (vec![SortKey::asc("k")], "k ASC NULLS LAST"),
        (vec![SortKey::desc("f")], "f DESC NULLS FIRST"),
        (vec![SortKey::asc("f").nulls_first()], "f ASC NULLS FIRST"),
        (
            vec![
                SortKey::asc("s"),
                SortKey::desc("k").nulls_last(),
                SortKey::asc("t"),
            ],
            "s ASC NULLS LAST, k DESC NULLS LAST, t ASC NULLS LAST",
        ),
        (
            vec![SortKey::desc("t"), SortKey::asc("id")],
            "t DESC NULLS FIRST, id ASC NULLS LAST",
        ),
    ];
    for seed in SEEDS {
        for g in gens() {
            let t = gen_table(&mut rng(seed), g);
            for (keys, order) in &cases {
                let got = t.sort(keys).unwrap();
                let want = df_sql(&[("t", &t)], &format!("SELECT * FROM t ORDER BY {order}"));
                for k in keys {
                    assert_eq!(
                        got.column(&k.column).unwrap().to_data(),
                        want.column(&k.column).unwrap().to_data(),
                        "sort by {order}, column {}",
                        k.column
                    );
                }
                assert!(got.equals_unordered(&t).unwrap());
            }
        }
    }
}

fn join_sql(how: JoinType) -> &'static str {
    match how {
        JoinType::Inner => "JOIN",
        JoinType::Left => "LEFT JOIN",
        JoinType::Right => "RIGHT JOIN",
        JoinType::FullOuter => "FULL OUTER JOIN",
        JoinType::LeftSemi => "LEFT SEMI JOIN",
        JoinType::LeftAnti => "LEFT ANTI JOIN",
    }
}

pub(crate) const ALL_JOINS: [JoinType; 6] = [
    JoinType::Inner,
    JoinType::Left,
    JoinType::Right,
    JoinType::FullOuter,
    JoinType::LeftSemi,
    JoinType::LeftAnti,
];

#[test]
fn joins_match_datafusion() {
    for seed in SEEDS {
        for (gl, gr) in [
            (Gen::new(120), Gen::new(90)),
            (Gen::new(0), Gen::new(50)),
            (Gen::new(60), Gen::new(0)),
            (Gen::new(100).skew(0.9), Gen::new(80).skew(0.9)),
        ] {
            let l = gen_table(&mut rng(seed), gl)
                .project(&["k", "s", "f", "id"])
                .unwrap();
            let r = gen_table(&mut rng(seed + 100), gr)
                .project(&["k", "s", "t", "i"])
                .unwrap();
            for how in ALL_JOINS {
                for algo in [JoinAlgorithm::Hash, JoinAlgorithm::SortMerge] {
                    // One key, then two keys.
                    for keys in [vec!["k"], vec!["k", "s"]] {
                        let opts = JoinOptions::on(&keys).how(how).algorithm(algo);
                        let got = l.join(&r, &opts).unwrap();
                        let on = keys
                            .iter()
                            .map(|k| format!("l.{k} = r.{k}"))
                            .collect::<Vec<_>>()
                            .join(" AND ");
                        let sel = if how.left_only() { "l.*" } else { "l.*, r.*" };
                        let want = df_sql(
                            &[("l", &l), ("r", &r)],
                            &format!("SELECT {sel} FROM l {} r ON {on}", join_sql(how)),
                        );
                        let want = with_names(&want, &got.column_names());
                        assert_same_rows(&got, &want, &format!("{how:?} {algo:?} on {keys:?}"));
                    }
                }
            }
        }
    }
}

#[test]
fn join_names_clashing_columns_with_suffixes() {
    let t = gen_table(&mut rng(9), Gen::new(10))
        .project(&["k", "f"])
        .unwrap();
    let j = t
        .join(&t, &JoinOptions::on(&["k"]).suffixes("_l", "_r"))
        .unwrap();
    assert_eq!(j.column_names(), vec!["k_l", "f_l", "k_r", "f_r"]);
    let j = t
        .join(
            &t.rename(&[("k", "key"), ("f", "g")]).unwrap(),
            &JoinOptions::on_columns(&["k"], &["key"]),
        )
        .unwrap();
    assert_eq!(j.column_names(), vec!["k", "f", "key", "g"]);
}

#[test]
fn group_by_matches_datafusion() {
    let aggs = vec![
        Agg::sum("f"),
        Agg::sum("i"),
        Agg::min("f"),
        Agg::max("s"),
        Agg::min("t"),
        Agg::count("f"),
        Agg::mean("f"),
        Agg::var("f"),
        Agg::std("f"),
        Agg::nunique("s"),
        Agg::median("f"),
    ];
    let sql = "sum(f) AS f_sum, sum(i) AS i_sum, min(f) AS f_min, max(s) AS s_max, min(t) AS t_min, \
               count(f) AS f_count, avg(f) AS f_mean, var_samp(f) AS f_var, stddev_samp(f) AS f_std, \
               count(DISTINCT s) AS s_nunique, median(f) AS f_quantile";
    for seed in SEEDS {
        for g in gens() {
            let t = gen_table(&mut rng(seed), g);
            for keys in [vec!["k"], vec!["s", "i"], vec![]] {
                let got = t.group_by(&keys, &aggs).unwrap();
                let (sel, grp) = if keys.is_empty() {
                    (String::new(), String::new())
                } else {
                    (
                        format!("{}, ", keys.join(", ")),
                        format!(" GROUP BY {}", keys.join(", ")),
                    )
                };
                let want = df_sql(&[("t", &t)], &format!("SELECT {sel}{sql} FROM t{grp}"));
                let want = with_names(&want, &got.column_names());
                assert_same_rows(&got, &want, &format!("group by {keys:?}"));
            }
        }
    }
}

#[test]
fn quantile_interpolates_like_pandas() {
    let t = Table::from_columns(vec![
        (
            "g",
            std::sync::Arc::new(deeprc_frame::arrow::array::Int64Array::from(vec![
                1, 1, 1, 1, 2,
            ])) as _,
        ),
        (
            "v",
            std::sync::Arc::new(deeprc_frame::arrow::array::Float64Array::from(vec![
                4.0, 1.0, 3.0, 2.0, 5.0,
            ])) as _,
        ),
    ])
    .unwrap();
    let q = t
        .group_by(
            &["g"],
            &[
                Agg::quantile("v", 0.25),
                Agg::quantile("v", 1.0).alias("mx"),
            ],
        )
        .unwrap();
    assert_eq!(
        q.column_as::<f64>("v_quantile").unwrap(),
        vec![Some(1.75), Some(5.0)]
    );
    assert_eq!(
        q.column_as::<f64>("mx").unwrap(),
        vec![Some(4.0), Some(5.0)]
    );
}

#[test]
fn unique_and_set_operations_match_datafusion() {
    for seed in SEEDS {
        for g in gens() {
            let a = gen_table(&mut rng(seed), g.keys(5))
                .project(&["k", "s"])
                .unwrap();
            let b = gen_table(&mut rng(seed + 7), g.keys(5))
                .project(&["k", "s"])
                .unwrap();
            let tabs = [("a", &a), ("b", &b)];
            assert_same_rows(
                &a.unique(&UniqueOptions::default()).unwrap(),
                &df_sql(&tabs, "SELECT DISTINCT * FROM a"),
                "unique",
            );
            assert_same_rows(
                &a.union(&b).unwrap(),
                &df_sql(&tabs, "SELECT * FROM a UNION SELECT * FROM b"),
                "union",
            );
            assert_same_rows(
                &a.intersect(&b).unwrap(),
                &df_sql(&tabs, "SELECT * FROM a INTERSECT SELECT * FROM b"),
                "intersect",
            );
            assert_same_rows(
                &a.subtract(&b).unwrap(),
                &df_sql(&tabs, "SELECT * FROM a EXCEPT SELECT * FROM b"),
                "subtract",
            );
            let first = a.unique(&UniqueOptions::subset(&["k"])).unwrap();
            assert_eq!(
                first.num_rows(),
                df_sql(&tabs, "SELECT DISTINCT k FROM a").num_rows()
            );
        }
    }
}

#[test]
fn unique_keeps_first_or_last() {
    let t = gen_table(&mut rng(5), Gen::new(50).keys(3).nulls(0.0))
        .project(&["k", "id"])
        .unwrap();
    let first = t.unique(&UniqueOptions::subset(&["k"])).unwrap();
    let last = t
        .unique(&UniqueOptions::subset(&["k"]).keep_last())
        .unwrap();
    let want_first = df_sql(
        &[("t", &t)],
        "SELECT k, min(id) AS id FROM t GROUP BY k ORDER BY id",
    );
    let want_last = df_sql(
        &[("t", &t)],
        "SELECT k, max(id) AS id FROM t GROUP BY k ORDER BY id",
    );
    assert!(
        first
            .equals(&with_names(&want_first, &first.column_names()))
            .unwrap()
            || first.equals_unordered(&want_first).unwrap()
    );
    assert_eq!(
        first.column_as::<i64>("id").unwrap(),
        want_first.column_as::<i64>("id").unwrap()
    );
    assert_eq!(
        last.column_as::<i64>("id").unwrap(),
        want_last.column_as::<i64>("id").unwrap()
    );
}

#[test]
fn slices_concat_and_equality() {
    let t = gen_table(&mut rng(3), Gen::new(100));
    let parts = split(&mut rng(4), &t, 5);
    let c = Table::concat(&parts).unwrap();
    assert!(c.equals(&t).unwrap());
    assert_eq!(
        t.head(7).column_as::<i64>("id").unwrap(),
        (0..7).map(Some).collect::<Vec<_>>()
    );
    assert_eq!(
        t.tail(3).column_as::<i64>("id").unwrap(),
        vec![Some(97), Some(98), Some(99)]
    );
    assert_eq!(t.slice(95, 10).num_rows(), 5);
    assert_eq!(t.slice(200, 10).num_rows(), 0);
    let shuffled = t.sort(&[SortKey::desc("id")]).unwrap();
    assert!(!shuffled.equals(&t).unwrap());
    assert!(shuffled.equals_unordered(&t).unwrap());
    assert!(!t.head(99).equals_unordered(&t).unwrap());
}

#[test]
fn dataframe_round_trip_is_zero_copy() {
    let t = gen_table(&mut rng(3), Gen::new(10));
    let ctx = FrameContext::new().unwrap();
    let df = t.to_dataframe(&ctx).unwrap();
    let back = Table::from_dataframe(&ctx, df).unwrap();
    assert!(back.equals(&t).unwrap());
    // The MemTable shares buffers: same pointer for the first column.
    let a = t.batches()[0].column(0).to_data();
    let b = back.batches()[0].column(0).to_data();
    assert_eq!(a.buffers()[0].as_ptr(), b.buffers()[0].as_ptr());
}

#[test]
fn group_by_over_many_batches_equals_one_batch() {
    let aggs = vec![
        Agg::sum("f"),
        Agg::min("t"),
        Agg::max("s"),
        Agg::count("i"),
        Agg::var("f"),
        Agg::nunique("s"),
        Agg::quantile("f", 0.7),
    ];
    for seed in SEEDS {
        for g in gens() {
            let t = gen_table(&mut rng(seed), g.nulls(0.3));
            let multi = Table::concat(&split(&mut rng(seed + 1), &t, 6)).unwrap();
            for keys in [vec!["k"], vec!["s", "i"], vec![]] {
                let a = multi.group_by(&keys, &aggs).unwrap();
                let b = t.group_by(&keys, &aggs).unwrap();
                // Same groups in the same (first appearance) order.
                assert!(
                    a.equals(&b).unwrap(),
                    "{keys:?}\n{}\n{}",
                    a.pretty().unwrap(),
                    b.pretty().unwrap()
                );
            }
        }
    }
}
