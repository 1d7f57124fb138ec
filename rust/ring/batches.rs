//! Arrow record batches in and out of an [`EventRing`](super::EventRing): validated,
//! zero-copy-when-possible import of event columns; export of events and trades.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, Float64Array, Int32Array, Int64Array, RecordBatch,
    UInt16Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use super::{Col, EventBatch, EventColumns, RingError, TradeColumns, EVENT_FIELDS, TRADE_FIELDS};

fn schema_of(names: &[&str], types: &[DataType]) -> SchemaRef {
    let fields: Vec<Field> = names
        .iter()
        .zip(types)
        .map(|(name, t)| Field::new(*name, t.clone(), false))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The schema of exported events: ts int64, kind uint16, key int64, symbol int32,
/// price/quantity/value float64, none nullable.
pub fn event_schema() -> SchemaRef {
    use DataType::{Float64, Int32, Int64, UInt16};
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    let types = [Int64, UInt16, Int64, Int32, Float64, Float64, Float64];
    SCHEMA
        .get_or_init(|| schema_of(&EVENT_FIELDS, &types))
        .clone()
}

/// The schema of closed-trade summaries (TRADE_FIELDS), none nullable.
pub fn trade_schema() -> SchemaRef {
    use DataType::{Float64, Int32, Int64};
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    let types = [
        Int64, Int32, Int64, Int64, Float64, Float64, Float64, Float64, Int64,
    ];
    SCHEMA
        .get_or_init(|| schema_of(&TRADE_FIELDS, &types))
        .clone()
}

/// Events as a record batch of [`event_schema`]; the vectors become the buffers.
pub fn events_batch(c: EventColumns) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(c.ts)),
        Arc::new(UInt16Array::from(c.kind)),
        Arc::new(Int64Array::from(c.key)),
        Arc::new(Int32Array::from(c.symbol)),
        Arc::new(Float64Array::from(c.price)),
        Arc::new(Float64Array::from(c.quantity)),
        Arc::new(Float64Array::from(c.value)),
    ];
    RecordBatch::try_new(event_schema(), columns)
}

/// Closed-trade summaries as a record batch of [`trade_schema`].
pub fn trades_batch(t: &TradeColumns) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(t.key.clone())),
        Arc::new(Int32Array::from(t.symbol.clone())),
        Arc::new(Int64Array::from(t.open_ts.clone())),
        Arc::new(Int64Array::from(t.close_ts.clone())),
        Arc::new(Float64Array::from(t.entry_price.clone())),
        Arc::new(Float64Array::from(t.exit_price.clone())),
        Arc::new(Float64Array::from(t.quantity.clone())),
        Arc::new(Float64Array::from(t.pnl.clone())),
        Arc::new(Int64Array::from(t.n_events.clone())),
    ];
    RecordBatch::try_new(trade_schema(), columns)
}

/// A native column type events are stored in, with the integer range it accepts.
trait IntTarget: Copy + TryFrom<i128> {
    type Arrow: ArrowPrimitiveType<Native = Self>;
    const RANGE: &'static str;
}

impl IntTarget for i64 {
    type Arrow = Int64Type;
    const RANGE: &'static str = "int64 range";
}

impl IntTarget for i32 {
    type Arrow = Int32Type;
    const RANGE: &'static str = "int32 range";
}

impl IntTarget for u16 {
    type Arrow = UInt16Type;
    const RANGE: &'static str = "0..65535";
}

/// Where a column comes from, for error messages: its name and the row offset of
/// its batch within the whole input.
#[derive(Clone, Copy)]
struct Place<'n> {
    name: &'n str,
    offset: usize,
}

fn cast_ints<S, T>(values: &[S], at: Place<'_>) -> Result<Vec<T>, RingError>
where
    S: Copy + Into<i128>,
    T: IntTarget,
{
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let wide: i128 = (*v).into();
        match T::try_from(wide) {
            Ok(x) => out.push(x),
            Err(_) => {
                return Err(RingError(format!(
                    "column '{}' row {}: value {wide} is out of range {}",
                    at.name,
                    at.offset + i,
                    T::RANGE
                )))
            }
        }
    }
    Ok(out)
}

fn values<T: ArrowPrimitiveType>(a: &dyn Array) -> &[T::Native] {
    a.as_primitive::<T>().values()
}

fn type_error(a: &dyn Array, at: Place<'_>, allowed: &str) -> RingError {
    RingError(format!(
        "column '{}' has type {}; allowed: {allowed}",
        at.name,
        a.data_type()
    ))
}

fn int_column<'a, T: IntTarget>(
    a: &'a dyn Array,
    at: Place<'_>,
) -> Result<Cow<'a, [T]>, RingError> {
    if a.data_type() == &T::Arrow::DATA_TYPE {
        return Ok(Cow::Borrowed(values::<T::Arrow>(a)));
    }
    let owned = match a.data_type() {
        DataType::Int8 => cast_ints(values::<Int8Type>(a), at)?,
        DataType::Int16 => cast_ints(values::<Int16Type>(a), at)?,
        DataType::Int32 => cast_ints(values::<Int32Type>(a), at)?,
        DataType::Int64 => cast_ints(values::<Int64Type>(a), at)?,
        DataType::UInt8 => cast_ints(values::<UInt8Type>(a), at)?,
        DataType::UInt16 => cast_ints(values::<UInt16Type>(a), at)?,
        DataType::UInt32 => cast_ints(values::<UInt32Type>(a), at)?,
        DataType::UInt64 => cast_ints(values::<UInt64Type>(a), at)?,
        _ => {
            return Err(type_error(
                a,
                at,
                "integer types (int8..int64, uint8..uint64)",
            ))
        }
    };
    Ok(Cow::Owned(owned))
}

fn float_column<'a>(a: &'a dyn Array, at: Place<'_>) -> Result<Cow<'a, [f64]>, RingError> {
    fn widen<S: Copy>(v: &[S], f: impl Fn(S) -> f64) -> Vec<f64> {
        v.iter().map(|x| f(*x)).collect()
    }
    let owned = match a.data_type() {
        DataType::Float64 => return Ok(Cow::Borrowed(values::<Float64Type>(a))),
        DataType::Float32 => widen(values::<Float32Type>(a), f64::from),
        DataType::Int8 => widen(values::<Int8Type>(a), f64::from),
        DataType::Int16 => widen(values::<Int16Type>(a), f64::from),
        DataType::Int32 => widen(values::<Int32Type>(a), f64::from),
        DataType::Int64 => widen(values::<Int64Type>(a), |x| x as f64),
        DataType::UInt8 => widen(values::<UInt8Type>(a), f64::from),
        DataType::UInt16 => widen(values::<UInt16Type>(a), f64::from),
        DataType::UInt32 => widen(values::<UInt32Type>(a), f64::from),
        DataType::UInt64 => widen(values::<UInt64Type>(a), |x| x as f64),
        _ => return Err(type_error(a, at, "float32, float64 or integer types")),
    };
    Ok(Cow::Owned(owned))
}

/// The column `name` of `batch`, checked for nulls, if present.
fn column<'a>(batch: &'a RecordBatch, at: Place<'_>) -> Result<Option<&'a dyn Array>, RingError> {
    let Some(a) = batch.column_by_name(at.name) else {
        return Ok(None);
    };
    let nulls = a.logical_null_count();
    if nulls > 0 {
        return Err(RingError(format!(
            "column '{}' has {nulls} null value(s); nulls are not allowed",
            at.name
        )));
    }
    Ok(Some(a.as_ref()))
}

fn required<'a>(batch: &'a RecordBatch, at: Place<'_>) -> Result<&'a dyn Array, RingError> {
    column(batch, at)?.ok_or_else(|| {
        let found: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        RingError(format!(
            "batch has no '{}' column; ts and kind are required (columns: {})",
            at.name,
            found.join(", ")
        ))
    })
}

/// Reads the event columns of `batch` (rows `offset..` of the whole input, for messages).
/// Columns already of the stored type are borrowed; other widths are converted, with
/// range checks. Columns other than EVENT_FIELDS are ignored.
pub fn import(batch: &RecordBatch, offset: usize) -> Result<EventBatch<'_>, RingError> {
    let place = |name| Place { name, offset };
    let ts = int_column::<i64>(required(batch, place("ts"))?, place("ts"))?;
    let kind = int_column::<u16>(required(batch, place("kind"))?, place("kind"))?;
    let mut out = EventBatch::new(ts, kind)?;
    if let Some(a) = column(batch, place("key"))? {
        out.key = Col::Values(int_column::<i64>(a, place("key"))?);
    }
    if let Some(a) = column(batch, place("symbol"))? {
        out.symbol = Col::Values(int_column::<i32>(a, place("symbol"))?);
    }
    if let Some(a) = column(batch, place("price"))? {
        out.price = Col::Values(float_column(a, place("price"))?);
    }
    if let Some(a) = column(batch, place("quantity"))? {
        out.quantity = Col::Values(float_column(a, place("quantity"))?);
    }
    if let Some(a) = column(batch, place("value"))? {
        out.value = Col::Values(float_column(a, place("value"))?);
    }
    out.check_lengths()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Event, EventRing, Policy};
    use arrow_array::{Float32Array, Int8Array, StringArray, UInt64Array};

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    #[test]
    fn import_casts_widths_and_defaults() {
        let b = batch(vec![
            ("ts", Arc::new(UInt64Array::from(vec![1u64, 2])) as ArrayRef),
            ("kind", Arc::new(Int8Array::from(vec![5i8, 6]))),
            ("price", Arc::new(Float32Array::from(vec![1.5f32, 2.5]))),
            ("extra", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        let eb = import(&b, 0).unwrap();
        let mut r = EventRing::new(Policy::KeepAll, 1, 10).unwrap();
        r.extend(&eb);
        let got = r.events();
        assert_eq!(
            got.get(0),
            Event {
                price: 1.5,
                ..Event::new(1, 5)
            }
        );
        assert_eq!(
            got.get(1),
            Event {
                price: 2.5,
                ..Event::new(2, 6)
            }
        );
    }

    #[test]
    fn import_borrows_native_columns() {
        let ts = Int64Array::from(vec![1, 2, 3]);
        let b = batch(vec![
            ("ts", Arc::new(ts) as ArrayRef),
            ("kind", Arc::new(UInt16Array::from(vec![1u16, 1, 1]))),
        ]);
        let eb = import(&b, 0).unwrap();
        assert!(matches!(eb.ts, Col::Values(Cow::Borrowed(_))));
        assert!(matches!(eb.kind, Col::Values(Cow::Borrowed(_))));
    }

    #[test]
    fn import_rejects_bad_columns() {
        let b = batch(vec![(
            "ts",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )]);
        assert!(import(&b, 0).unwrap_err().0.contains("no 'kind' column"));
        let b = batch(vec![
            ("ts", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            ("kind", Arc::new(Int64Array::from(vec![1, 70000]))),
        ]);
        let e = import(&b, 10).unwrap_err().0;
        assert!(
            e.contains("'kind' row 11: value 70000 is out of range 0..65535"),
            "{e}"
        );
        let b = batch(vec![
            (
                "ts",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            ("kind", Arc::new(Int64Array::from(vec![1, 1]))),
        ]);
        assert!(import(&b, 0).unwrap_err().0.contains("null"));
        let b = batch(vec![
            ("ts", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("kind", Arc::new(Int64Array::from(vec![1]))),
            ("symbol", Arc::new(StringArray::from(vec!["x"]))),
        ]);
        assert!(import(&b, 0)
            .unwrap_err()
            .0
            .contains("'symbol' has type Utf8"));
        let b = batch(vec![
            (
                "ts",
                Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef,
            ),
            ("kind", Arc::new(Int64Array::from(vec![1]))),
        ]);
        assert!(import(&b, 0).unwrap_err().0.contains("int64 range"));
    }

    #[test]
    fn export_schemas() {
        let mut r = EventRing::new(Policy::TradeComplete, 1, 1).unwrap();
        r.append(&Event {
            key: 1,
            ..Event::new(1, 5)
        });
        r.append(&Event {
            key: 2,
            ..Event::new(2, 1)
        });
        r.append(&Event {
            key: 1,
            ..Event::new(3, 6)
        });
        let e = events_batch(r.events()).unwrap();
        assert_eq!(e.num_rows(), 1);
        assert_eq!(e.schema(), event_schema());
        let t = trades_batch(r.trades()).unwrap();
        assert_eq!(t.num_rows(), 1);
        assert_eq!(t.schema().field(8).name(), "n_events");
    }
}
