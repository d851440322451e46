//! deeprc-frame demo: the data-engineering step of the hydrology pipeline on
//! N thread ranks.
//!
//! ```text
//! cargo run --release -p deeprc-examples --bin frame_demo -- [ranks]   # default 4
//! DEEPRC_DATA=/path/to/data cargo run -p deeprc-examples --bin frame_demo
//! ```
//!
//! 1. Each rank reads its basins' CAMELS-US Daymet forcing and USGS
//!    streamflow files.
//! 2. Forcing and streamflow are joined on (gauge, date), distributed.
//! 3. Mean flow, precipitation and max temperature per basin per year, by a
//!    distributed group-by; then sorted globally.
//! 4. ETTh1: each rank reads a byte range of the CSV; mean oil temperature
//!    per month by distributed SQL, and global statistics by all-reduce.

use deeprc_comm::{local, Communicator};
use deeprc_frame::io::{camels::CamelsKind, data_dir};
use deeprc_frame::{sql, Agg, DistTable, FrameContext, FrameError, JoinOptions, SortKey};
use std::sync::Arc;

fn main() {
    let ranks: usize = std::env::args()
        .nth(1)
        .map_or(4, |s| s.parse().expect("ranks must be a number"));
    let data = data_dir();
    let camels = data.join("camels_us_4basins");
    let etth1 = data.join("ETT-small/ETTh1.csv");
    let t0 = std::time::Instant::now();
    let result = local::launch(ranks, |comm| -> Result<_, FrameError> {
        let comm: Arc<dyn Communicator> = Arc::new(comm);
        let forcing = DistTable::read_camels(Arc::clone(&comm), &camels, CamelsKind::Forcing)?;
        let flow = DistTable::read_camels(Arc::clone(&comm), &camels, CamelsKind::Streamflow)?;
        let joined = forcing.join(&flow, &JoinOptions::on(&["gauge", "date"]))?;
        let per_year = joined
            .with_column_sql("year", "date_part('year', date_x)")?
            .group_by(
                &["gauge_x", "year"],
                &[
                    Agg::mean("flow").alias("mean_flow_cfs"),
                    Agg::count("flow").alias("days_with_flow"),
                    Agg::sum("prcp").alias("precip_mm"),
                    Agg::max("tmax").alias("max_tmax_c"),
                ],
            )?
            .rename(&[("gauge_x", "gauge")])?
            .sort(&[SortKey::asc("gauge"), SortKey::asc("year")])?;
        let rows_joined = joined.num_rows()?;

        let ctx = FrameContext::new()?;
        let ett = DistTable::read_etth1(Arc::clone(&comm), &etth1)?;
        let monthly = sql::sql(
            &ctx,
            &[("ett", &ett)],
            "SELECT date_trunc('month', date) AS month, avg(\"OT\") AS mean_ot, max(\"HUFL\") AS max_hufl \
             FROM ett GROUP BY 1 ORDER BY 1 LIMIT 6",
        )?;
        let ot_mean = ett.mean("OT")?;
        let ot_var = ett.var("OT")?;
        Ok((
            comm.rank(),
            rows_joined,
            per_year.gather(0)?,
            monthly.gather(0)?,
            ett.num_rows()?,
            ot_mean,
            ot_var,
        ))
    });
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("frame_demo failed: {e}");
            std::process::exit(1);
        }
    };
    let (_, joined, per_year, monthly, ett_rows, ot_mean, ot_var) = &out[0];
    println!("CAMELS-US on {ranks} thread ranks: forcing joined with streamflow on (gauge, date): {joined} rows");
    println!("{}", per_year.as_ref().unwrap().pretty().unwrap());
    println!(
        "ETTh1: {ett_rows} rows; OT mean {:.3}, variance {:.3}",
        ot_mean.unwrap_or(f64::NAN),
        ot_var.unwrap_or(f64::NAN)
    );
    println!("{}", monthly.as_ref().unwrap().pretty().unwrap());
    println!("done in {:.2?}", t0.elapsed());
}
