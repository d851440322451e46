//! Element types of batches and tensors.
//!
//! [`DType`] is the runtime tag; [`TensorElement`] is the sealed trait of
//! the Rust types behind it (as `tensorflow::TensorType` and rsmpi's
//! `Equivalence` are): only these types can be read out of a batch, so a
//! typed view never reinterprets bytes as a type they were not written as.

use std::fmt;

/// The element type of a batch part or tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// `u8`.
    U8,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl DType {
    /// Bytes of one element.
    pub const fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// `true` for `f32` and `f64`.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// The name (`"f32"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that batch elements can have. Sealed: implemented for `u8`,
/// `i8`, `i16`, `i32`, `i64`, `f32` and `f64`.
pub trait TensorElement:
    sealed::Sealed + bytemuck::Pod + Default + PartialOrd + fmt::Debug + Send + Sync + 'static
{
    /// The runtime tag.
    const DTYPE: DType;
    /// Converts (with `as` semantics: saturating for floats to integers).
    fn from_f64(v: f64) -> Self;
    /// Converts an integer exactly where it fits (`as` semantics otherwise).
    fn from_i64(v: i64) -> Self;
    /// The value as `f64`.
    fn to_f64(self) -> f64;
}

macro_rules! element {
    ($($t:ty => $d:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl TensorElement for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn from_f64(v: f64) -> Self { v as $t }
            #[inline]
            fn from_i64(v: i64) -> Self { v as $t }
            #[inline]
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
element!(u8 => U8, i8 => I8, i16 => I16, i32 => I32, i64 => I64, f32 => F32, f64 => F64);

/// A native value of an Arrow column that can be converted into any
/// [`TensorElement`]: integers go through `i64` (exact), floats through
/// `f64`.
pub(crate) trait Native: Copy + Send + Sync + 'static {
    const IS_FLOAT: bool;
    fn as_f64(self) -> f64;
    fn as_i64(self) -> i64;
    #[inline]
    fn convert<T: TensorElement>(self) -> T {
        if Self::IS_FLOAT || T::DTYPE.is_float() {
            T::from_f64(self.as_f64())
        } else {
            T::from_i64(self.as_i64())
        }
    }
}

macro_rules! native {
    ($float:expr; $($t:ty),*) => {$(
        impl Native for $t {
            const IS_FLOAT: bool = $float;
            #[inline]
            fn as_f64(self) -> f64 { self as f64 }
            #[inline]
            fn as_i64(self) -> i64 { self as i64 }
        }
    )*};
}
native!(false; i8, i16, i32, i64, u8, u16, u32, u64);
native!(true; f32, f64);

impl Native for bool {
    const IS_FLOAT: bool = false;
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    #[inline]
    fn as_i64(self) -> i64 {
        i64::from(self)
    }
}

/// Calls `$body` with `$T` bound to the Rust type of `$dtype`.
macro_rules! with_element {
    ($dtype:expr, $T:ident, $body:expr) => {
        match $dtype {
            $crate::dtype::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::dtype::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::dtype::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::dtype::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::dtype::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::dtype::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::dtype::DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}
pub(crate) use with_element;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_integers_exact() {
        let big = (1i64 << 60) + 1;
        assert_eq!(big.convert::<i64>(), big);
        assert_eq!(3.7f64.convert::<i32>(), 3);
        assert_eq!(true.convert::<f32>(), 1.0);
        assert_eq!(250u8.convert::<f64>(), 250.0);
        assert_eq!(DType::F64.size(), 8);
        assert_eq!(<f32 as TensorElement>::DTYPE.to_string(), "f32");
    }
}
