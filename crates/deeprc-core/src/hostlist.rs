//! Slurm host lists, shared by the pilot (allocations) and the
//! communicators (finding the first node of a job step).
//!
//! Slurm's compressed lists: host lists (`dn[1-3,5]`, `r[1-2]n[01-02]`) and
//! counts per node (`2(x3),1`), as `SLURM_JOB_NODELIST`,
//! `SLURM_JOB_CPUS_PER_NODE` and `squeue -o %N` write them.

/// The most host names one list may expand to (a typo such as
/// `n[1-999999999]` is an error, not an allocation of gigabytes).
pub const MAX_HOSTS: usize = 1 << 20;

/// Expands a Slurm host list into host names, in order.
///
/// Commas separate items (except inside brackets); an item may hold several
/// bracket groups, each a comma list of numbers and `lo-hi` ranges, and
/// expands to their product in order (`r[1-2]n[1-2]` is `r1n1 r1n2 r2n1
/// r2n2`). A range keeps the zero padding of its bounds (`n[08-10]` is
/// `n08 n09 n10`).
///
/// ```
/// use deeprc_core::hostlist::expand_hostlist;
/// assert_eq!(expand_hostlist("dn[1-3,5]").unwrap(), ["dn1", "dn2", "dn3", "dn5"]);
/// assert_eq!(expand_hostlist("a,b[01-02]").unwrap(), ["a", "b01", "b02"]);
/// ```
///
/// # Errors
/// An unbalanced bracket, an empty or non-numeric range, a range whose low
/// end is above its high end, or more than [`MAX_HOSTS`] names.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top(list.trim())? {
        if item.is_empty() {
            continue;
        }
        expand_item(item, &mut out).map_err(|e| format!("host list {list:?}: {e}"))?;
    }
    Ok(out)
}

/// Splits on the commas outside brackets.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => {
                if depth > 0 {
                    return Err(format!("host list {s:?}: nested '['"));
                }
                depth += 1;
            }
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("host list {s:?}: ']' without '['"))?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("host list {s:?}: '[' without ']'"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// Expands one item (`pre[ranges]mid[ranges]post`) onto `out`.
fn expand_item(item: &str, out: &mut Vec<String>) -> Result<(), String> {
    // Cartesian product, built left to right.
    let mut acc = vec![String::new()];
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or("'[' without ']'")?;
        let prefix = &rest[..open];
        let values = expand_ranges(&rest[open + 1..close])?;
        let n = acc.len().saturating_mul(values.len());
        if out.len().saturating_add(n) > MAX_HOSTS {
            return Err(format!("more than {MAX_HOSTS} hosts"));
        }
        let mut next = Vec::with_capacity(n);
        for a in &acc {
            for v in &values {
                next.push(format!("{a}{prefix}{v}"));
            }
        }
        acc = next;
        rest = &rest[close + 1..];
    }
    if rest.contains(']') {
        return Err("']' without '['".into());
    }
    for a in acc {
        out.push(a + rest);
    }
    Ok(())
}

/// `1-3,5,08-10` into its numbers as text (padded like their bounds).
fn expand_ranges(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(format!("bad range {part:?} in [{spec}]"));
        }
        let width = if lo.starts_with('0') && lo.len() > 1 {
            lo.len()
        } else {
            0
        };
        let a: u64 = lo.parse().map_err(|_| format!("bad number {lo:?}"))?;
        let b: u64 = hi.parse().map_err(|_| format!("bad number {hi:?}"))?;
        if a > b {
            return Err(format!("range {part:?} runs backwards"));
        }
        if (b - a) as usize >= MAX_HOSTS - out.len().min(MAX_HOSTS) {
            return Err(format!("more than {MAX_HOSTS} hosts"));
        }
        out.extend((a..=b).map(|v| format!("{v:0width$}")));
    }
    Ok(out)
}

/// Expands a count per node such as `SLURM_JOB_CPUS_PER_NODE`'s
/// `2(x3),1` (three nodes of 2, then one of 1).
///
/// ```
/// use deeprc_core::hostlist::expand_counts;
/// assert_eq!(expand_counts("2(x3),1").unwrap(), [2, 2, 2, 1]);
/// ```
///
/// # Errors
/// A part that is not `N` or `N(xR)`, or more than [`MAX_HOSTS`] entries.
pub fn expand_counts(spec: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in spec.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("count list {spec:?}: bad part {part:?}");
        let (n, times) = match part.split_once("(x") {
            Some((n, r)) => (n, r.strip_suffix(')').ok_or_else(bad)?),
            None => (part, "1"),
        };
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        let times: usize = times.trim().parse().map_err(|_| bad())?;
        if out.len().saturating_add(times) > MAX_HOSTS {
            return Err(format!(
                "count list {spec:?}: more than {MAX_HOSTS} entries"
            ));
        }
        out.extend(std::iter::repeat_n(n, times));
    }
    Ok(out)
}

/// Slurm's CPU id lists (`0-1,4`, from `scontrol show job -d`), counted.
///
/// ```
/// assert_eq!(deeprc_core::hostlist::count_ids("0-1,4").unwrap(), 3);
/// ```
///
/// # Errors
/// A part that is not a number or a `lo-hi` range.
pub fn count_ids(spec: &str) -> Result<usize, String> {
    expand_ranges(spec).map(|v| v.len())
}

/// Slurm's CPU or GPU index lists (`0-1,4`), expanded.
///
/// ```
/// assert_eq!(deeprc_core::hostlist::expand_ids("0-1,4").unwrap(), [0, 1, 4]);
/// ```
///
/// # Errors
/// A part that is not a number or a `lo-hi` range.
pub fn expand_ids(spec: &str) -> Result<Vec<usize>, String> {
    expand_ranges(spec)?
        .iter()
        .map(|v| v.parse().map_err(|_| format!("bad index {v:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists() {
        let e = |s| expand_hostlist(s).unwrap();
        assert_eq!(e("dn1"), ["dn1"]);
        assert_eq!(e("dn[1-3,5]"), ["dn1", "dn2", "dn3", "dn5"]);
        assert_eq!(e("dn[1-2],login,x[7]"), ["dn1", "dn2", "login", "x7"]);
        assert_eq!(e("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(e("n[001-002]-ib"), ["n001-ib", "n002-ib"]);
        assert_eq!(e("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(e("a,,b"), ["a", "b"]);
        assert_eq!(e(""), Vec::<String>::new());
        assert_eq!(e("nid[00098-00100]").len(), 3);
        assert_eq!(e("dn[1-2]").len(), 2);
    }

    #[test]
    fn bad_host_lists() {
        for bad in [
            "dn[1-3",
            "dn1-3]",
            "dn[3-1]",
            "dn[a-b]",
            "dn[]",
            "dn[1-]",
            "dn[[1]]",
            "n[0-99999999]",
        ] {
            assert!(expand_hostlist(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn counts() {
        assert_eq!(expand_counts("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert_eq!(expand_counts("128").unwrap(), [128]);
        assert_eq!(expand_counts("4(x2)").unwrap(), [4, 4]);
        assert!(expand_counts("2(x").is_err());
        assert!(expand_counts("two").is_err());
        assert_eq!(count_ids("0-1,4").unwrap(), 3);
        assert_eq!(expand_ids("0-1,4").unwrap(), [0, 1, 4]);
    }
}
