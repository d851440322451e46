//! Key encoding and the hash tables behind join, group-by, unique and the
//! set operations.
//!
//! Hand-written because Arrow has no hash table kernel and DataFusion's
//! (`JoinHashMap`, `GroupValues`) live inside its streaming operators. Two
//! key representations:
//!
//! ```text
//!  one integer-like column (ints, dates, timestamps, durations)
//!      -> i64 values + validity   -> IntTable: open addressing, (key, gid) slots
//!  anything else (strings, floats, several columns)
//!      -> Arrow row format bytes  -> BytesTable: open addressing, gid slots + hashes
//! ```
//!
//! Both map a key to a dense group id (`gid`) in order of first appearance;
//! group-by, unique and the set operations use the gids, the joins build a
//! CSR index (gid -> build rows) and probe it. Skew costs nothing extra: all
//! rows of one key share one slot.
//!
//! Row numbers and gids are `u32`, `u32::MAX` meaning "empty": the operators
//! check that their inputs have at most [`crate::limits::MAX_ROWS`] rows
//! before they build these tables.

use crate::error::{Context, FrameError, Result};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};

/// Whether a single key column of this type takes the integer fast path.
pub(crate) fn is_int_like(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | Date32
            | Date64
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
            | Duration(_)
    )
}

/// Casts an integer-like array to Int64 (values unchanged).
pub(crate) fn to_i64(a: &ArrayRef) -> Result<ArrayRef> {
    use DataType::*;
    let a = match a.data_type() {
        Date32 | Time32(_) => datafusion::arrow::compute::cast(a, &Int32).ctx("casting a key")?,
        _ => ArrayRef::clone(a),
    };
    datafusion::arrow::compute::cast(&a, &Int64).ctx("casting a key to Int64")
}

/// Encoded key columns of a set of rows.
pub(crate) enum KeyRows {
    /// One integer-like column as i64, with its validity.
    Int {
        values: datafusion::arrow::buffer::ScalarBuffer<i64>,
        nulls: Option<NullBuffer>,
    },
    /// Several columns or other types: Arrow's row format; `nulls` marks
    /// rows where any key column is null.
    Rows {
        rows: Rows,
        nulls: Option<NullBuffer>,
    },
}

impl KeyRows {
    pub(crate) fn len(&self) -> usize {
        match self {
            KeyRows::Int { values, .. } => values.len(),
            KeyRows::Rows { rows, .. } => rows.num_rows(),
        }
    }

    /// `true` when row `i` has a null in some key column.
    #[inline]
    pub(crate) fn is_null(&self, i: usize) -> bool {
        match self {
            KeyRows::Int { nulls, .. } | KeyRows::Rows { nulls, .. } => {
                nulls.as_ref().is_some_and(|n| n.is_null(i))
            }
        }
    }
}

/// A row converter (Arrow's row format, for keys of sorts, joins, group-bys
/// and set operations) of `fields`, whose types are `types`, after refusing
/// what the row format cannot encode: a struct with no fields, anywhere in
/// a type. arrow-row 55 panics on it while encoding (found by the
/// `frame_ipc` fuzz target, on a table a peer sent); here it is an
/// [`FrameError::Unsupported`] naming the type.
pub(crate) fn row_converter(
    op: &'static str,
    types: &[&DataType],
    fields: Vec<SortField>,
) -> Result<RowConverter> {
    fn has_empty_struct(dt: &DataType) -> bool {
        match dt {
            DataType::Struct(fs) => {
                fs.is_empty() || fs.iter().any(|f| has_empty_struct(f.data_type()))
            }
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::FixedSizeList(f, _)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::Map(f, _) => has_empty_struct(f.data_type()),
            DataType::Dictionary(_, v) => has_empty_struct(v),
            DataType::RunEndEncoded(_, v) => has_empty_struct(v.data_type()),
            DataType::Union(fs, _) => fs.iter().any(|(_, f)| has_empty_struct(f.data_type())),
            _ => false,
        }
    }
    if let Some(dt) = types.iter().find(|t| has_empty_struct(t)) {
        return Err(FrameError::Unsupported {
            op,
            what: format!("a key of type {dt} (a struct with no fields cannot be row-encoded)"),
        });
    }
    RowConverter::new(fields).ctx("making a row converter")
}

/// Encodes key columns; both sides of a join or set operation must use the
/// same encoder so that their encodings compare.
pub(crate) struct KeyEncoder {
    int: bool,
    converter: Option<RowConverter>,
}

impl KeyEncoder {
    pub(crate) fn new(types: &[DataType]) -> Result<Self> {
        if types.len() == 1 && is_int_like(&types[0]) {
            return Ok(Self {
                int: true,
                converter: None,
            });
        }
        let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
        let refs: Vec<&DataType> = types.iter().collect();
        Ok(Self {
            int: false,
            converter: Some(row_converter("key encoding", &refs, fields)?),
        })
    }

    pub(crate) fn encode(&self, columns: &[ArrayRef]) -> Result<KeyRows> {
        if self.int {
            let a = to_i64(&columns[0])?;
            let p = a.as_primitive::<Int64Type>();
            return Ok(KeyRows::Int {
                values: p.values().clone(),
                nulls: p.nulls().filter(|n| n.null_count() > 0).cloned(),
            });
        }
        let conv = self
            .converter
            .as_ref()
            .ok_or_else(|| FrameError::internal("key encoder without converter"))?;
        let rows = conv.convert_columns(columns).ctx("encoding key rows")?;
        Ok(KeyRows::Rows {
            rows,
            nulls: combined_nulls(columns),
        })
    }
}

/// The rows where every column is valid (None when no column has nulls).
pub(crate) fn combined_nulls(columns: &[ArrayRef]) -> Option<NullBuffer> {
    let mut acc: Option<NullBuffer> = None;
    for c in columns {
        let n = c.logical_nulls();
        acc = NullBuffer::union(acc.as_ref(), n.as_ref());
    }
    acc.filter(|n| n.null_count() > 0)
}

const EMPTY: u32 = u32::MAX;

#[inline]
fn hash_i64(k: i64) -> u64 {
    // Fibonacci hashing: the high bits of the product index the table.
    (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Clone, Copy)]
struct Slot {
    key: i64,
    gid: u32,
}

/// Open-addressing table from i64 keys to dense group ids.
pub(crate) struct IntTable {
    slots: Vec<Slot>,
    shift: u32,
    mask: usize,
    len: usize,
}

impl IntTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let want = ((n.max(8) as f64) / 0.7).ceil() as usize;
        let cap = want.next_power_of_two();
        Self {
            slots: vec![Slot { key: 0, gid: EMPTY }; cap],
            shift: 64 - cap.trailing_zeros(),
            mask: cap - 1,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        let mut bigger = IntTable::with_capacity(old.len());
        for s in old.iter().filter(|s| s.gid != EMPTY) {
            let mut i = (hash_i64(s.key) >> bigger.shift) as usize;
            while bigger.slots[i].gid != EMPTY {
                i = (i + 1) & bigger.mask;
            }
            bigger.slots[i] = *s;
        }
        bigger.len = self.len;
        *self = bigger;
    }

    /// The gid of `key`, inserting it with gid `len()` when new.
    #[inline]
    pub(crate) fn insert(&mut self, key: i64) -> (u32, bool) {
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let mut i = (hash_i64(key) >> self.shift) as usize;
        loop {
            let s = self.slots[i];
            if s.gid == EMPTY {
                let gid = self.len as u32;
                self.slots[i] = Slot { key, gid };
                self.len += 1;
                return (gid, true);
            }
            if s.key == key {
                return (s.gid, false);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The gid of `key`, if present.
    #[inline]
    pub(crate) fn get(&self, key: i64) -> Option<u32> {
        let mut i = (hash_i64(key) >> self.shift) as usize;
        loop {
            let s = self.slots[i];
            if s.gid == EMPTY {
                return None;
            }
            if s.key == key {
                return Some(s.gid);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Open-addressing table from byte strings (Arrow rows) to dense group ids.
pub(crate) struct BytesTable {
    slots: Vec<u32>,
    hashes: Vec<u64>,
    arena: Vec<u8>,
    offsets: Vec<usize>,
    mask: usize,
    state: ahash::RandomState,
}

impl BytesTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        let want = ((n.max(8) as f64) / 0.7).ceil() as usize;
        let cap = want.next_power_of_two();
        Self {
            slots: vec![EMPTY; cap],
            hashes: Vec::new(),
            arena: Vec::new(),
            offsets: vec![0],
            mask: cap - 1,
            state: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    #[inline]
    fn key(&self, gid: u32) -> &[u8] {
        let g = gid as usize;
        &self.arena[self.offsets[g]..self.offsets[g + 1]]
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.slots = vec![EMPTY; cap];
        self.mask = cap - 1;
        for (g, h) in self.hashes.iter().enumerate() {
            let mut i = (*h as usize) & self.mask;
            while self.slots[i] != EMPTY {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = g as u32;
        }
    }

    #[inline]
    pub(crate) fn insert(&mut self, key: &[u8]) -> (u32, bool) {
        if (self.len() + 1) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let h = self.state.hash_one(key);
        let mut i = (h as usize) & self.mask;
        loop {
            let g = self.slots[i];
            if g == EMPTY {
                let gid = self.hashes.len() as u32;
                self.slots[i] = gid;
                self.hashes.push(h);
                self.arena.extend_from_slice(key);
                self.offsets.push(self.arena.len());
                return (gid, true);
            }
            if self.hashes[g as usize] == h && self.key(g) == key {
                return (g, false);
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<u32> {
        let h = self.state.hash_one(key);
        let mut i = (h as usize) & self.mask;
        loop {
            let g = self.slots[i];
            if g == EMPTY {
                return None;
            }
            if self.hashes[g as usize] == h && self.key(g) == key {
                return Some(g);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// Group ids of a set of rows.
pub(crate) struct Grouping {
    /// The gid of each row.
    pub(crate) gids: Vec<u32>,
    /// The first row of each group, in gid order (ascending).
    pub(crate) first_row: Vec<u32>,
}

impl Grouping {
    pub(crate) fn num_groups(&self) -> usize {
        self.first_row.len()
    }
}

/// Assigns group ids in order of first appearance; rows with a null key
/// form one group of their own (SQL `GROUP BY` and `DISTINCT` semantics).
pub(crate) fn group_rows(keys: &KeyRows) -> Grouping {
    let mut g = Grouper::new(keys.len());
    g.push(keys, 0);
    g.finish()
}

/// [`group_rows`] over several batches of keys (encoded by one encoder),
/// with row numbers continuing from batch to batch.
pub(crate) struct Grouper {
    int: Option<IntTable>,
    bytes: Option<BytesTable>,
    /// The output gid of the null group (int keys), once seen.
    null_gid: Option<u32>,
    gids: Vec<u32>,
    first_row: Vec<u32>,
}

impl Grouper {
    pub(crate) fn new(rows: usize) -> Self {
        Self {
            int: None,
            bytes: None,
            null_gid: None,
            gids: Vec::with_capacity(rows),
            first_row: Vec::new(),
        }
    }

    /// Groups the rows of `keys`, numbered from `base`.
    pub(crate) fn push(&mut self, keys: &KeyRows, base: u32) {
        let n = keys.len();
        match keys {
            KeyRows::Int { values, nulls } => {
                let t = self
                    .int
                    .get_or_insert_with(|| IntTable::with_capacity(1024.min(n)));
                for (i, &k) in values.iter().enumerate() {
                    if nulls.as_ref().is_some_and(|m| m.is_null(i)) {
                        let first_row = &mut self.first_row;
                        let g = *self.null_gid.get_or_insert_with(|| {
                            first_row.push(base + i as u32);
                            (first_row.len() - 1) as u32
                        });
                        self.gids.push(g);
                        continue;
                    }
                    // Table gids skip the null group: shift those after it.
                    let (tg, new) = t.insert(k);
                    let g = tg + u32::from(self.null_gid.is_some_and(|ng| tg >= ng));
                    if new {
                        self.first_row.push(base + i as u32);
                    }
                    self.gids.push(g);
                }
            }
            KeyRows::Rows { rows, .. } => {
                let t = self
                    .bytes
                    .get_or_insert_with(|| BytesTable::with_capacity(1024.min(n)));
                for i in 0..n {
                    let (g, new) = t.insert(rows.row(i).as_ref());
                    if new {
                        self.first_row.push(base + i as u32);
                    }
                    self.gids.push(g);
                }
            }
        }
    }

    pub(crate) fn finish(self) -> Grouping {
        Grouping {
            gids: self.gids,
            first_row: self.first_row,
        }
    }
}

/// A CSR index of build rows by key for joins: rows with a null key are left
/// out (they never match).
pub(crate) struct JoinIndex {
    table: Lookup,
    offsets: Vec<u32>,
    rows: Vec<u32>,
}

enum Lookup {
    Int(IntTable),
    Bytes(BytesTable),
}

impl JoinIndex {
    pub(crate) fn build(keys: &KeyRows) -> Self {
        let n = keys.len();
        let mut gids = Vec::with_capacity(n);
        let table = match keys {
            KeyRows::Int { values, .. } => {
                let mut t = IntTable::with_capacity(n);
                for (i, &k) in values.iter().enumerate() {
                    gids.push(if keys.is_null(i) {
                        EMPTY
                    } else {
                        t.insert(k).0
                    });
                }
                Lookup::Int(t)
            }
            KeyRows::Rows { rows, .. } => {
                let mut t = BytesTable::with_capacity(n);
                for i in 0..n {
                    gids.push(if keys.is_null(i) {
                        EMPTY
                    } else {
                        t.insert(rows.row(i).as_ref()).0
                    });
                }
                Lookup::Bytes(t)
            }
        };
        let groups = match &table {
            Lookup::Int(t) => t.len(),
            Lookup::Bytes(t) => t.len(),
        };
        let mut offsets = vec![0u32; groups + 1];
        for &g in &gids {
            if g != EMPTY {
                offsets[g as usize + 1] += 1;
            }
        }
        for g in 0..groups {
            offsets[g + 1] += offsets[g];
        }
        let mut fill = offsets.clone();
        let mut rows = vec![0u32; offsets[groups] as usize];
        for (i, &g) in gids.iter().enumerate() {
            if g != EMPTY {
                let f = &mut fill[g as usize];
                rows[*f as usize] = i as u32;
                *f += 1;
            }
        }
        Self {
            table,
            offsets,
            rows,
        }
    }

    /// The build rows whose key equals probe row `i` of `probe` (encoded
    /// with the same encoder); empty for a null key.
    #[inline]
    pub(crate) fn matches(&self, probe: &KeyRows, i: usize) -> &[u32] {
        if probe.is_null(i) {
            return &[];
        }
        let g = match (&self.table, probe) {
            (Lookup::Int(t), KeyRows::Int { values, .. }) => t.get(values[i]),
            (Lookup::Bytes(t), KeyRows::Rows { rows, .. }) => t.get(rows.row(i).as_ref()),
            _ => None,
        };
        match g {
            Some(g) => {
                let g = g as usize;
                &self.rows[self.offsets[g] as usize..self.offsets[g + 1] as usize]
            }
            None => &[],
        }
    }
}

/// Whether probe row `i` has a key present in a set built from other rows
/// (set semantics: null keys equal each other).
pub(crate) struct KeySet {
    table: Lookup,
    has_null: bool,
}

impl KeySet {
    pub(crate) fn build(keys: &KeyRows) -> Self {
        let n = keys.len();
        let mut has_null = false;
        let table = match keys {
            KeyRows::Int { values, .. } => {
                let mut t = IntTable::with_capacity(n);
                for (i, &k) in values.iter().enumerate() {
                    if keys.is_null(i) {
                        has_null = true;
                    } else {
                        t.insert(k);
                    }
                }
                Lookup::Int(t)
            }
            KeyRows::Rows { rows, .. } => {
                // The row format encodes nulls: they compare equal.
                let mut t = BytesTable::with_capacity(n);
                for i in 0..n {
                    t.insert(rows.row(i).as_ref());
                }
                Lookup::Bytes(t)
            }
        };
        Self { table, has_null }
    }

    #[inline]
    pub(crate) fn contains(&self, probe: &KeyRows, i: usize) -> bool {
        match (&self.table, probe) {
            (Lookup::Int(t), KeyRows::Int { values, .. }) => {
                if probe.is_null(i) {
                    self.has_null
                } else {
                    t.get(values[i]).is_some()
                }
            }
            (Lookup::Bytes(t), KeyRows::Rows { rows, .. }) => t.get(rows.row(i).as_ref()).is_some(),
            _ => false,
        }
    }
}
