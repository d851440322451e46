//! Property tests (proptest, with shrinking) of the distributed operators.
//!
//! Every case is a table split over 1 to 7 thread ranks: each rank holds
//! 0 to 200 rows (a fifth of the ranks hold none), keys come from a small
//! range so that they repeat, a third of the cases put most rows on one hot
//! key, and keys and values are null with some probability. For every
//! operator, the result gathered on rank 0 equals a single-node reference —
//! DataFusion SQL on the concatenation of the partitions — as a multiset of
//! rows; the sort must also be globally ordered (each rank sorted, rank r's
//! last key <= rank r + 1's first key) and the shuffle must put each key on
//! one rank.
//!
//! CI runs 16 cases per property; `PROPTEST_CASES=500` runs more. A failure
//! prints the shrunk input rank by rank as `(k, s, f, i)` rows (`id` is the
//! row's position in the concatenation). Failures are not persisted to a
//! regression file.

use super::common::{assert_same_rows, concat, df_sql, on_threads, with_names};
use deeprc_frame::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use deeprc_frame::prelude::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

const MAX_RANKS: usize = 7;
const MAX_ROWS: usize = 200;
/// The key that holds most rows in a skewed case.
const HOT: i64 = 3;
const WORDS: [&str; 7] = ["ant", "bee", "cat", "dog", "eel", "fox", ""];

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 50_000,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    }
}

// ---- generated inputs ----

/// One row: an int key, a string key, a float and an int value.
#[derive(Clone, PartialEq)]
struct Row {
    k: Option<i64>,
    s: Option<&'static str>,
    f: Option<f64>,
    i: Option<i64>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn cell(v: Option<impl fmt::Debug>) -> String {
            v.map_or_else(|| "null".to_string(), |v| format!("{v:?}"))
        }
        write!(
            f,
            "({}, {}, {}, {})",
            cell(self.k),
            cell(self.s),
            cell(self.f),
            cell(self.i)
        )
    }
}

/// The rows of every rank.
#[derive(Clone)]
struct Parts(Vec<Vec<Row>>);

impl fmt::Debug for Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<usize> = self.0.iter().map(Vec::len).collect();
        write!(f, "{} ranks, rows {counts:?}, (k, s, f, i):", self.0.len())?;
        for (r, rows) in self.0.iter().enumerate() {
            write!(f, "\n  rank {r}: {rows:?}")?;
        }
        Ok(())
    }
}

impl Parts {
    /// One table per rank, columns k, s, f, i and id (the global position).
    fn tables(&self) -> Vec<Table> {
        let mut first = 0;
        self.0
            .iter()
            .map(|rows| {
                let t = table(rows, first);
                first += rows.len() as i64;
                t
            })
            .collect()
    }
}

/// Two tables split over the same ranks.
#[derive(Clone, Debug)]
struct Pair {
    left: Parts,
    right: Parts,
}

fn table(rows: &[Row], first_id: i64) -> Table {
    let k: Int64Array = rows.iter().map(|r| r.k).collect();
    let s: StringArray = rows.iter().map(|r| r.s).collect();
    let f: Float64Array = rows.iter().map(|r| r.f).collect();
    let i: Int64Array = rows.iter().map(|r| r.i).collect();
    let id = Int64Array::from_iter_values(first_id..first_id + rows.len() as i64);
    Table::from_columns(vec![
        ("k", Arc::new(k) as ArrayRef),
        ("s", Arc::new(s) as ArrayRef),
        ("f", Arc::new(f) as ArrayRef),
        ("i", Arc::new(i) as ArrayRef),
        ("id", Arc::new(id) as ArrayRef),
    ])
    .unwrap()
}

/// The distribution of one case's values, applied to the raw draws of
/// every row (a plain tuple with the rows rather than a `prop_flat_map`, so
/// that shrinking the shape keeps the rows instead of drawing new ones).
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Keys `k` are drawn from `0..keys`.
    keys: i64,
    /// Percent of the rows whose key is [`HOT`].
    hot: u8,
    /// Percent of nulls in every column.
    nulls: u8,
}

fn shape(max_keys: i64, max_hot: u8) -> impl Strategy<Value = Shape> {
    (
        1..=max_keys,
        prop_oneof![2 => Just(0u8), 1 => 50..=max_hot],
        prop_oneof![1 => Just(0u8), 2 => 1..=40u8],
    )
        .prop_map(|(keys, hot, nulls)| Shape { keys, hot, nulls })
}

/// The raw draws of one row: per column a percentile (null when in the top
/// `nulls` percent; shrinks towards non-null) and a value; for `k` also a
/// percentile for the hot key.
#[derive(Clone, Debug)]
struct Draw {
    k: (u8, u8, i64),
    s: (u8, usize),
    f: (u8, i32),
    i: (u8, i64),
}

fn draw() -> impl Strategy<Value = Draw> {
    (
        (0..100u8, 0..100u8, 0..64i64),
        (0..100u8, 0..WORDS.len()),
        (0..100u8, -400i32..400),
        (0..100u8, -5i64..5),
    )
        .prop_map(|(k, s, f, i)| Draw { k, s, f, i })
}

impl Shape {
    fn row(&self, d: &Draw) -> Row {
        let some = |p: u8| p < 100 - self.nulls;
        let (pk, ph, k) = d.k;
        let k = if ph >= 100 - self.hot {
            HOT
        } else {
            k % self.keys
        };
        Row {
            k: some(pk).then_some(k),
            s: some(d.s.0).then_some(WORDS[d.s.1]),
            // Multiples of 0.25: sums are exact in any order.
            f: some(d.f.0).then_some(f64::from(d.f.1) * 0.25),
            i: some(d.i.0).then_some(d.i.1),
        }
    }

    fn rows(&self, draws: &[Vec<Draw>]) -> Parts {
        Parts(
            draws
                .iter()
                .map(|p| p.iter().map(|d| self.row(d)).collect())
                .collect(),
        )
    }
}

/// One rank's draws: none a fifth of the time, else 0 to `max_rows`.
fn part(max_rows: usize) -> BoxedStrategy<Vec<Draw>> {
    prop_oneof![1 => Just(Vec::new()), 4 => vec(draw(), 0..=max_rows)].boxed()
}

/// A table over 1 to 7 ranks.
fn parts(max_keys: i64, max_hot: u8) -> impl Strategy<Value = Parts> {
    (shape(max_keys, max_hot), vec(part(MAX_ROWS), 1..=MAX_RANKS))
        .prop_map(|(sh, draws)| sh.rows(&draws))
}

/// Two tables over the same 1 to 7 ranks, the right one at most
/// `right_rows` rows a rank.
fn pair(max_keys: i64, max_hot: u8, right_rows: usize) -> impl Strategy<Value = Pair> {
    (
        shape(max_keys, max_hot),
        vec((part(MAX_ROWS), part(right_rows)), 1..=MAX_RANKS),
    )
        .prop_map(|(sh, ranks)| {
            let (left, right): (Vec<_>, Vec<_>) = ranks.into_iter().unzip();
            Pair {
                left: sh.rows(&left),
                right: sh.rows(&right),
            }
        })
}

/// The default options, or buckets of a few rows (join and sort then run
/// bucket by bucket).
fn options() -> impl Strategy<Value = DistOptions> {
    prop_oneof![
        Just(DistOptions::default()),
        (1usize..=64).prop_map(|b| DistOptions::default().bucket_rows(b)),
    ]
}

/// One to three distinct sort keys of k, s, f and i, in any order, either
/// direction, nulls first or last.
fn sort_keys() -> impl Strategy<Value = Vec<SortKey>> {
    (
        subsequence(vec!["k", "s", "f", "i"], 1..=3),
        any::<bool>(),
        vec((any::<bool>(), any::<bool>()), 3),
    )
        .prop_map(|(mut columns, reversed, flags)| {
            if reversed {
                columns.reverse();
            }
            columns
                .iter()
                .zip(&flags)
                .map(|(&c, &(desc, nulls_first))| {
                    let k = if desc {
                        SortKey::desc(c)
                    } else {
                        SortKey::asc(c)
                    };
                    if nulls_first {
                        k.nulls_first()
                    } else {
                        k.nulls_last()
                    }
                })
                .collect()
        })
}

// ---- running and checking ----

/// This rank's partition of a result, and the result gathered on rank 0.
fn collect(d: &DistTable) -> Result<(Table, Option<Table>), FrameError> {
    Ok((d.partition().clone(), d.gather(0)?))
}

/// The partitions of a result in rank order and the gathered result
/// (checked to be their concatenation).
fn unpack(out: Vec<(Table, Option<Table>)>, what: &str) -> (Vec<Table>, Table) {
    let gathered = out[0].1.clone().expect("rank 0 gathers");
    assert!(
        out[1..].iter().all(|o| o.1.is_none()),
        "{what}: only rank 0 gathers"
    );
    let parts: Vec<Table> = out.into_iter().map(|o| o.0).collect();
    assert!(
        gathered.equals(&concat(&parts)).unwrap(),
        "{what}: gather keeps rank order"
    );
    (parts, gathered)
}

/// Runs `f` on a table over thread ranks (`opts` set on it) and returns the
/// result's partitions and the gathered result.
fn run(
    parts: &[Table],
    opts: DistOptions,
    what: &str,
    f: impl Fn(DistTable) -> Result<DistTable, FrameError> + Sync,
) -> (Vec<Table>, Table) {
    unpack(
        on_threads(parts, |d| collect(&f(d.with_options(opts))?)),
        what,
    )
}

/// [`run`] with two tables split over the same ranks.
fn run2(
    left: &[Table],
    right: &[Table],
    opts: DistOptions,
    what: &str,
    f: impl Fn(DistTable, DistTable) -> Result<DistTable, FrameError> + Sync,
) -> (Vec<Table>, Table) {
    let out = on_threads(left, |l| {
        let r = DistTable::new(right[l.rank()].clone(), Arc::clone(l.comm()))?;
        collect(&f(l.with_options(opts), r.with_options(opts))?)
    });
    unpack(out, what)
}

/// One cell of a key column.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Cell {
    I(i64),
    F(f64),
    S(String),
}

/// The values of `columns` row by row.
fn key_rows(t: &Table, columns: &[&str]) -> Vec<Vec<Option<Cell>>> {
    let cols: Vec<Vec<Option<Cell>>> = columns
        .iter()
        .map(|&c| match c {
            "s" => t
                .column_as::<String>(c)
                .unwrap()
                .into_iter()
                .map(|v| v.map(Cell::S))
                .collect(),
            "f" => t
                .column_as::<f64>(c)
                .unwrap()
                .into_iter()
                .map(|v| v.map(Cell::F))
                .collect(),
            _ => t
                .column_as::<i64>(c)
                .unwrap()
                .into_iter()
                .map(|v| v.map(Cell::I))
                .collect(),
        })
        .collect();
    (0..t.num_rows())
        .map(|r| cols.iter().map(|c| c[r].clone()).collect())
        .collect()
}

/// The order of two key rows under `keys`.
fn cmp_keys(a: &[Option<Cell>], b: &[Option<Cell>], keys: &[SortKey]) -> Ordering {
    for ((x, y), k) in a.iter().zip(b).zip(keys) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if k.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if k.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = x.partial_cmp(y).expect("comparable keys");
                if k.descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn sql_join(how: JoinType) -> &'static str {
    match how {
        JoinType::Inner => "JOIN",
        JoinType::Left => "LEFT JOIN",
        JoinType::Right => "RIGHT JOIN",
        JoinType::FullOuter => "FULL OUTER JOIN",
        JoinType::LeftSemi => "LEFT SEMI JOIN",
        JoinType::LeftAnti => "LEFT ANTI JOIN",
    }
}

// ---- the properties ----

proptest! {
    #![proptest_config(config())]

    /// Shuffle keeps the multiset of rows and puts every key (null
    /// included) on exactly one rank.
    #[test]
    fn shuffle_keeps_rows_and_puts_each_key_on_one_rank(
        case in parts(12, 95),
        keys in subsequence(vec!["k", "s", "f", "i"], 1..=2),
    ) {
        let input = case.tables();
        let what = format!("shuffle by {keys:?}");
        let (out, gathered) = run(&input, DistOptions::default(), &what, |d| d.shuffle(&keys));
        assert_same_rows(&gathered, &concat(&input), &what);
        let mut home: HashMap<String, usize> = HashMap::new();
        for (r, p) in out.iter().enumerate() {
            for key in key_rows(p, &keys) {
                let key = format!("{key:?}");
                let first = *home.entry(key.clone()).or_insert(r);
                prop_assert_eq!(first, r, "{}: key {} on ranks {} and {}", what, key, first, r);
            }
        }
    }

    /// Inner and left joins (and one more join type) on an int key, a
    /// string key or two keys, hash or sort-merge, default or tiny buckets,
    /// equal DataFusion's (null keys match nothing).
    #[test]
    fn join_matches_datafusion(
        case in pair(12, 80, 40),
        keys in select(vec![vec!["k"], vec!["s"], vec!["k", "s"], vec!["k", "i"]]),
        algorithm in select(vec![JoinAlgorithm::Hash, JoinAlgorithm::SortMerge]),
        other in select(vec![
            JoinType::Right,
            JoinType::FullOuter,
            JoinType::LeftSemi,
            JoinType::LeftAnti,
        ]),
        opts in options(),
    ) {
        let (l, r) = (case.left.tables(), case.right.tables());
        let (lt, rt) = (concat(&l), concat(&r));
        let on = keys
            .iter()
            .map(|k| format!("l.{k} = r.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        for how in [JoinType::Inner, JoinType::Left, other] {
            let o = JoinOptions::on(&keys).how(how).algorithm(algorithm);
            let what = format!("{how:?} {algorithm:?} join on {keys:?} with {opts:?}");
            let (_, got) = run2(&l, &r, opts, &what, |a, b| a.join(&b, &o));
            let sel = if how.left_only() { "l.*" } else { "l.*, r.*" };
            let want = df_sql(
                &[("l", &lt), ("r", &rt)],
                &format!("SELECT {sel} FROM l {} r ON {on}", sql_join(how)),
            );
            assert_same_rows(&got, &with_names(&want, &got.column_names()), &what);
        }
    }

    /// Sort by one to three keys, either direction, nulls first or last:
    /// the same rows, globally ordered like DataFusion's ORDER BY, every
    /// rank's part sorted and no rank's keys above the next rank's.
    #[test]
    fn sort_orders_globally(
        case in parts(12, 95),
        keys in sort_keys(),
        opts in options(),
    ) {
        let columns: Vec<&str> = keys.iter().map(|k| k.column.as_str()).collect();
        let input = case.tables();
        let what = format!("sort by {keys:?} with {opts:?}");
        let (out, gathered) = run(&input, opts, &what, |d| d.sort(&keys));
        let all = concat(&input);
        assert_same_rows(&gathered, &all, &what);

        let order = keys
            .iter()
            .map(|k| {
                format!(
                    "{} {} NULLS {}",
                    k.column,
                    if k.descending { "DESC" } else { "ASC" },
                    if k.nulls_first { "FIRST" } else { "LAST" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let want = df_sql(&[("t", &all)], &format!("SELECT * FROM t ORDER BY {order}"));
        prop_assert_eq!(
            key_rows(&gathered, &columns),
            key_rows(&want, &columns),
            "{}: gathered keys against ORDER BY {}",
            &what,
            &order
        );

        let mut last: Option<(usize, Vec<Option<Cell>>)> = None;
        for (r, p) in out.iter().enumerate() {
            let rows = key_rows(p, &columns);
            for (j, w) in rows.windows(2).enumerate() {
                prop_assert!(
                    cmp_keys(&w[0], &w[1], &keys) != Ordering::Greater,
                    "{}: rank {} rows {} and {} out of order: {:?} > {:?}",
                    &what, r, j, j + 1, &w[0], &w[1]
                );
            }
            if let (Some((q, prev)), Some(first)) = (&last, rows.first()) {
                prop_assert!(
                    cmp_keys(prev, first, &keys) != Ordering::Greater,
                    "{}: rank {}'s last key {:?} > rank {}'s first key {:?}",
                    &what, q, prev, r, first
                );
            }
            if let Some(l) = rows.last() {
                last = Some((r, l.clone()));
            }
        }
    }

    /// Group-by on no key, an int key, a string key or both, with sum,
    /// count, min, max and mean of a float and an int column, equals
    /// DataFusion's GROUP BY (nulls form one group).
    #[test]
    fn group_by_matches_datafusion(
        case in parts(12, 95),
        keys in select(vec![vec![], vec!["k"], vec!["s"], vec!["k", "s"]]),
    ) {
        let aggs = [
            Agg::sum("f"),
            Agg::sum("i"),
            Agg::count("f"),
            Agg::count("i"),
            Agg::min("f"),
            Agg::max("f"),
            Agg::min("i"),
            Agg::max("i"),
            Agg::mean("f"),
            Agg::mean("i"),
        ];
        let sql = "sum(f), sum(i), count(f), count(i), min(f), max(f), min(i), max(i), \
                   avg(f), avg(i)";
        let input = case.tables();
        let what = format!("group by {keys:?}");
        let (_, got) = run(&input, DistOptions::default(), &what, |d| d.group_by(&keys, &aggs));
        let query = if keys.is_empty() {
            format!("SELECT {sql} FROM t")
        } else {
            let k = keys.join(", ");
            format!("SELECT {k}, {sql} FROM t GROUP BY {k}")
        };
        let want = df_sql(&[("t", &concat(&input))], &query);
        assert_same_rows(&got, &with_names(&want, &got.column_names()), &what);
    }

    /// Unique on all columns of a projection equals SELECT DISTINCT; on a
    /// subset it keeps the globally first (or last) row of each key.
    #[test]
    fn unique_matches_datafusion(
        case in parts(8, 95),
        columns in select(vec![vec!["k"], vec!["s"], vec!["k", "s"], vec!["k", "s", "i"]]),
    ) {
        let input = case.tables();
        let all = concat(&input);
        let cols = columns.join(", ");
        let what = format!("unique on {columns:?}");
        let (_, got) = run(&input, DistOptions::default(), &what, |d| {
            d.project(&columns)?.unique(&UniqueOptions::default())
        });
        let want = df_sql(&[("t", &all)], &format!("SELECT DISTINCT {cols} FROM t"));
        assert_same_rows(&got, &want, &what);

        for (last, pick) in [(false, "min"), (true, "max")] {
            let o = if last {
                UniqueOptions::subset(&columns).keep_last()
            } else {
                UniqueOptions::subset(&columns)
            };
            let keep = if last { "last" } else { "first" };
            let what = format!("unique subset {columns:?}, keep {keep}");
            let (_, got) = run(&input, DistOptions::default(), &what, |d| d.unique(&o));
            let want = df_sql(
                &[("t", &all)],
                &format!(
                    "SELECT t.* FROM t JOIN \
                     (SELECT {cols}, {pick}(id) AS m FROM t GROUP BY {cols}) g ON t.id = g.m"
                ),
            );
            assert_same_rows(&got, &with_names(&want, &got.column_names()), &what);
        }
    }

    /// Union, intersect and subtract (distinct, nulls equal) of two tables
    /// projected on (k, s) equal SQL's UNION, INTERSECT and EXCEPT.
    #[test]
    fn set_operations_match_datafusion(case in pair(6, 95, MAX_ROWS)) {
        let proj = |parts: &Parts| -> Vec<Table> {
            parts
                .tables()
                .iter()
                .map(|t| t.project(&["k", "s"]).unwrap())
                .collect()
        };
        let (a, b) = (proj(&case.left), proj(&case.right));
        let (at, bt) = (concat(&a), concat(&b));
        type Op = fn(&DistTable, &DistTable) -> Result<DistTable, FrameError>;
        let ops: [(&str, &str, Op); 3] = [
            ("union", "UNION", |x, y| x.union(y)),
            ("intersect", "INTERSECT", |x, y| x.intersect(y)),
            ("subtract", "EXCEPT", |x, y| x.subtract(y)),
        ];
        for (name, sql, op) in ops {
            let (_, got) = run2(&a, &b, DistOptions::default(), name, |x, y| op(&x, &y));
            let want = df_sql(
                &[("a", &at), ("b", &bt)],
                &format!("SELECT * FROM a {sql} SELECT * FROM b"),
            );
            assert_same_rows(&got, &want, name);
        }
    }
}
