//! Scalar reductions of one column over all ranks, through all-reduce.

use crate::error::{Context, FrameError, Result};
use crate::local::keys::{is_int_like, to_i64};
use crate::table::{column_index, Table};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::scalar::ScalarValue;
use deeprc_comm::{Communicator, CommunicatorExt, ReduceOp};

fn column(table: &Table, name: &str) -> Result<datafusion::arrow::array::ArrayRef> {
    column_index(table.schema(), name)?;
    table.column(name)
}

fn numeric(op: &'static str, table: &Table, name: &str) -> Result<DataType> {
    let dt = table
        .schema()
        .field(column_index(table.schema(), name)?)
        .data_type()
        .clone();
    if !(dt.is_integer() || dt.is_floating()) {
        return Err(FrameError::unsupported(
            op,
            format!("column {name:?} of type {dt}"),
        ));
    }
    Ok(dt)
}

/// Local (sum as f64, count of non-null values).
fn local_sum_count(table: &Table, name: &str) -> Result<(f64, i64)> {
    let a = cast(&column(table, name)?, &DataType::Float64).ctx("casting to Float64")?;
    let a = a.as_primitive::<Float64Type>();
    let sum = a.iter().flatten().sum();
    Ok((sum, (a.len() - a.null_count()) as i64))
}

/// The number of non-null values of `name` over all ranks (all rows when
/// `name` is `None`).
pub fn count(comm: &dyn Communicator, table: &Table, name: Option<&str>) -> Result<u64> {
    let local = match name {
        None => table.num_rows() as u64,
        Some(c) => {
            let a = column(table, c)?;
            (a.len() - a.logical_null_count()) as u64
        }
    };
    Ok(comm.all_reduce_scalar(local, ReduceOp::Sum)?)
}

/// The sum of `name` over all ranks: `Int64` for integer columns (exact,
/// wrapping), `Float64` for floats; null when there is no value.
pub fn sum(comm: &dyn Communicator, table: &Table, name: &str) -> Result<ScalarValue> {
    let dt = numeric("sum", table, name)?;
    if dt.is_integer() {
        let a = cast(&column(table, name)?, &DataType::Int64).ctx("casting to Int64")?;
        let a = a.as_primitive::<Int64Type>();
        let local = [
            a.iter().flatten().fold(0i64, i64::wrapping_add),
            (a.len() - a.null_count()) as i64,
        ];
        let mut v = local;
        comm.all_reduce(&mut v, ReduceOp::Sum)?;
        return Ok(ScalarValue::Int64((v[1] > 0).then_some(v[0])));
    }
    let (s, c) = local_sum_count(table, name)?;
    let total = comm.all_reduce_scalar(s, ReduceOp::Sum)?;
    let n = comm.all_reduce_scalar(c, ReduceOp::Sum)?;
    Ok(ScalarValue::Float64((n > 0).then_some(total)))
}

/// The mean of `name` over all ranks; `None` when there is no value.
pub fn mean(comm: &dyn Communicator, table: &Table, name: &str) -> Result<Option<f64>> {
    numeric("mean", table, name)?;
    let (s, c) = local_sum_count(table, name)?;
    let total = comm.all_reduce_scalar(s, ReduceOp::Sum)?;
    let n = comm.all_reduce_scalar(c, ReduceOp::Sum)?;
    Ok((n > 0).then(|| total / n as f64))
}

/// The sample variance of `name` over all ranks (two passes: the global
/// mean, then the sum of squared deviations); `None` below two values.
pub fn var(comm: &dyn Communicator, table: &Table, name: &str) -> Result<Option<f64>> {
    numeric("var", table, name)?;
    let (s, c) = local_sum_count(table, name)?;
    let mut v = [s, c as f64];
    comm.all_reduce(&mut v, ReduceOp::Sum)?;
    let n = v[1];
    let m = if n > 0.0 { v[0] / n } else { 0.0 };
    let a = cast(&column(table, name)?, &DataType::Float64).ctx("casting to Float64")?;
    let ss: f64 = a
        .as_primitive::<Float64Type>()
        .iter()
        .flatten()
        .map(|x| (x - m) * (x - m))
        .sum();
    let ss = comm.all_reduce_scalar(ss, ReduceOp::Sum)?;
    Ok((n > 1.0).then(|| ss / (n - 1.0)))
}

/// The minimum (or maximum with `max`) of `name` over all ranks, as a
/// value of the column's type; null when there is no value. Numeric,
/// date, time and timestamp columns.
pub fn extreme(
    comm: &dyn Communicator,
    table: &Table,
    name: &str,
    max: bool,
) -> Result<ScalarValue> {
    let dt = table
        .schema()
        .field(column_index(table.schema(), name)?)
        .data_type()
        .clone();
    let op = if max { ReduceOp::Max } else { ReduceOp::Min };
    let a = column(table, name)?;
    let count = comm.all_reduce_scalar((a.len() - a.logical_null_count()) as i64, ReduceOp::Sum)?;
    let value = if is_int_like(&dt) {
        let v = to_i64(&a)?;
        let v = v.as_primitive::<Int64Type>();
        let local = if max {
            v.iter().flatten().max().unwrap_or(i64::MIN)
        } else {
            v.iter().flatten().min().unwrap_or(i64::MAX)
        };
        ScalarValue::Int64(Some(comm.all_reduce_scalar(local, op)?))
    } else if dt.is_floating() {
        let v = cast(&a, &DataType::Float64).ctx("casting to Float64")?;
        let it = v.as_primitive::<Float64Type>().iter().flatten();
        let local = if max {
            it.fold(f64::NEG_INFINITY, f64::max)
        } else {
            it.fold(f64::INFINITY, f64::min)
        };
        ScalarValue::Float64(Some(comm.all_reduce_scalar(local, op)?))
    } else {
        return Err(FrameError::unsupported(
            if max { "max" } else { "min" },
            format!("column {name:?} of type {dt} (use group_by with no keys)"),
        ));
    };
    if count == 0 {
        return ScalarValue::try_from(&dt).ctx("making a null scalar");
    }
    if matches!(dt, DataType::Date32 | DataType::Time32(_)) {
        return value
            .cast_to(&DataType::Int32)
            .and_then(|v| v.cast_to(&dt))
            .ctx("casting the result");
    }
    value.cast_to(&dt).ctx("casting the result")
}
