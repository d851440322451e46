//! IO: CSV, Parquet, CAMELS-US.
