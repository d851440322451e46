//! Zero copy: batches view Arrow memory, shown by pointer identity.

use super::common::rows;
use deeprc_bridge::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, RecordBatch,
};
use deeprc_bridge::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use deeprc_bridge::{
    DataSource, Loader, LoaderOptions, Normalize, RowSpec, SamplerOptions, WindowSpec, ZeroCopy,
};
use std::sync::Arc;

fn require() -> LoaderOptions {
    LoaderOptions {
        zero_copy: ZeroCopy::Require,
        ..Default::default()
    }
}

#[test]
fn a_primitive_column_is_viewed_in_place() {
    let src = rows(0, 100, 1000, 40); // record batches of 40, 40, 20 rows
    let col = src.batches()[1].column(1);
    let arrow_ptr = col.as_primitive::<Float32Type>().values().as_ptr() as *const u8;
    let ds = RowSpec::new(&["x"], &["x"]).build(src).unwrap().train;
    let loader = Loader::new(ds, SamplerOptions::sequential(20), require()).unwrap();
    let batches: Vec<_> = loader.epoch(0).collect::<Result<_, _>>().unwrap();
    // Batch 2 = rows 40..60 = the start of record batch 1.
    let b = &batches[2];
    assert!(b.inputs().is_zero_copy());
    assert_eq!(b.inputs().as_ptr(), arrow_ptr);
    assert_eq!(b.inputs().shape(), &[20, 1]);
    assert_eq!(b.inputs().as_slice::<f32>().unwrap()[0], 20.0);
    // A batch spanning two record batches cannot be a view: Prefer copies it.
    let ds = RowSpec::new(&["x"], &["x"])
        .build(rows(0, 100, 1000, 40))
        .unwrap()
        .train;
    let loader = Loader::new(ds, SamplerOptions::sequential(30), LoaderOptions::default()).unwrap();
    let b = loader.epoch(0).nth(1).unwrap().unwrap(); // rows 30..60
    assert!(!b.inputs().is_zero_copy());
    assert_eq!(b.inputs().to_vec::<f32>().unwrap()[..2], [15.0, 15.5]);
    // Normalised columns are copied.
    let ds = RowSpec::new(&["x"], &["x"])
        .normalize(Normalize::ZScore)
        .build(rows(0, 10, 100, 10))
        .unwrap()
        .train;
    let loader = Loader::new(ds, SamplerOptions::sequential(5), require()).unwrap();
    let e = loader.epoch(0).next().unwrap().unwrap_err();
    assert!(e.to_string().contains("normalised"), "{e}");
}

#[test]
fn a_fixed_size_list_column_is_an_n_d_view() {
    let k = 4;
    let values = Float32Array::from((0..(50 * k)).map(|v| v as f32).collect::<Vec<_>>());
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::new(Arc::clone(&field), k as i32, Arc::new(values), None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("v", list.data_type().clone(), false),
        Field::new("y", DataType::Float32, false),
    ]));
    let y = Float32Array::from(vec![1.0; 50]);
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(list) as ArrayRef, Arc::new(y)],
    )
    .unwrap();
    let child_ptr = batch
        .column(0)
        .as_fixed_size_list()
        .values()
        .as_primitive::<Float32Type>()
        .values()
        .as_ptr() as *const u8;
    let src = DataSource::from_batches(schema, vec![batch]).unwrap();
    let ds = RowSpec::new(&["v"], &["y"]).build(src).unwrap().train;
    let loader = Loader::new(ds, SamplerOptions::sequential(10), require()).unwrap();
    let b = loader.epoch(0).nth(3).unwrap().unwrap();
    assert_eq!(b.inputs().shape(), &[10, 4]);
    assert_eq!(
        b.inputs().as_ptr(),
        unsafe_free_offset(child_ptr, 30 * k * 4)
    );
    assert_eq!(
        b.inputs().as_slice::<f32>().unwrap()[..5],
        [120.0, 121.0, 122.0, 123.0, 124.0]
    );
    assert!(b.targets().is_zero_copy());
}

/// `ptr + bytes` without unsafe (as an address).
fn unsafe_free_offset(ptr: *const u8, bytes: usize) -> *const u8 {
    ptr.wrapping_add(bytes)
}

#[test]
fn sequential_windows_are_strided_views_equal_to_copies() {
    let spec = WindowSpec::new(5, 3, &["x", "id"], &["x"])
        .stride(2)
        .series("g");
    let ds = Arc::new(spec.build(rows(0, 200, 50, 64)).unwrap().train);
    let view = Loader::new(
        Arc::clone(&ds),
        SamplerOptions::sequential(7),
        LoaderOptions::default(),
    )
    .unwrap();
    let copy_opts = LoaderOptions {
        zero_copy: ZeroCopy::Never,
        ..Default::default()
    };
    let copy = Loader::new(Arc::clone(&ds), SamplerOptions::sequential(7), copy_opts).unwrap();
    let mut views = 0;
    for (a, b) in view.epoch(0).zip(copy.epoch(0)) {
        let (a, b) = (a.unwrap(), b.unwrap());
        if a.inputs().is_zero_copy() {
            views += 1;
            assert_eq!(
                a.inputs().strides(),
                &[4, 2, 1],
                "stride 2 rows of 2 features"
            );
            assert!(!a.inputs().is_contiguous());
        }
        assert!(!b.inputs().is_zero_copy());
        assert_eq!(
            a.inputs().to_vec::<f32>().unwrap(),
            b.inputs().to_vec::<f32>().unwrap()
        );
        assert_eq!(
            a.targets().to_vec::<f32>().unwrap(),
            b.targets().to_vec::<f32>().unwrap()
        );
    }
    assert!(views > 0, "batches inside one series are views");
}
