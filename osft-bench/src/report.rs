//! The main job's results: one serializable record, printed as JSON (`--json`) or as the table.

use serde::Serialize;

use crate::stats::{human_bytes, human_time, TimeSummary};

/// Everything a main-job run reports; the JSON output is this record as it stands.
#[derive(Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub executor: String,
    pub executor_note: String,
    pub machine: Machine,
    pub model: String,
    pub model_note: String,
    pub quick: bool,
    pub quick_note: &'static str,
    /// Layers included per stack.
    pub layers: usize,
    pub layers_note: String,
    pub target_matrices: usize,
    pub target_matrices_whole_model: usize,
    pub dtype: &'static str,
    pub rank_ratio: f64,
    pub side: &'static str,
    pub warmup: usize,
    pub warmup_note: String,
    pub reps: usize,
    pub targets: Vec<TargetRow>,
    pub step: Step,
    pub gemm_reference: GemmReference,
    pub fraction_of_square_gemm: f64,
    pub fraction_of_same_shape_gemm: f64,
    pub decompose: Decompose,
    pub wall_s: f64,
}

#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub threads: usize,
}

/// One group of same-shape targets, projected as one strided batch per side.
#[derive(Serialize)]
pub struct TargetRow {
    pub names: Vec<String>,
    pub n: usize,
    pub m: usize,
    pub k: usize,
    pub r_low: usize,
    pub count: usize,
    pub count_whole_model: usize,
    pub flops_per_step: f64,
    pub bytes_per_step: f64,
    pub time: TimeSummary,
    pub gflops: f64,
    pub gbs: f64,
}

/// A whole projection step: every included target.
#[derive(Serialize)]
pub struct Step {
    pub time: TimeSummary,
    pub flops: f64,
    /// The least memory traffic: read the bases, read and write the gradients.
    pub bytes: f64,
    pub gflops: f64,
    pub gbs: f64,
    /// Scaled by flops to every target of the model.
    pub whole_model_s: f64,
}

#[derive(Serialize)]
pub struct GemmReference {
    pub square: SquareGemm,
    pub same_shapes: SameShapeGemm,
}

#[derive(Serialize)]
pub struct SquareGemm {
    pub n: usize,
    pub time: TimeSummary,
    pub gflops: f64,
}

/// The projection's own GEMM shapes, one matrix each, weighted by their count in a step.
#[derive(Serialize)]
pub struct SameShapeGemm {
    pub flops: f64,
    pub time: TimeSummary,
    pub gflops: f64,
}

#[derive(Serialize)]
pub struct Decompose {
    pub mode: &'static str,
    pub measured_s: f64,
    pub matrices_decomposed: usize,
    pub whole_model_s: f64,
    pub whole_model_extrapolated: bool,
    pub per_shape: Vec<DecomposeRow>,
}

/// Decomposition timing of one group of same-shape targets.
#[derive(Serialize)]
pub struct DecomposeRow {
    pub names: String,
    pub n: usize,
    pub m: usize,
    /// Matrices decomposed (0: the time of the transposed shape is used).
    pub decomposed: usize,
    pub seconds: f64,
    pub seconds_per_matrix: f64,
    pub count_whole_model: usize,
}

impl Report {
    pub fn print_json(&self) -> Result<(), String> {
        println!("{}", serde_json::to_string_pretty(self).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// The human-readable table.
    pub fn print_table(&self) {
        let gname = match self.dtype {
            "f32" => "SGEMM",
            "f64" => "DGEMM",
            _ => "GEMM (f32 compute)",
        };
        let scaled_note = if self.quick { ", of the 1/8-scale stand-in" } else { "" };
        println!("osft-bench {} — projection of OSFT gradients on {}", self.version, self.model);
        println!(
            "executor     {} ({} threads; {}){}",
            self.executor,
            self.machine.threads,
            self.machine.cpu,
            if self.executor_note.is_empty() { String::new() } else { format!(" — {}", self.executor_note) }
        );
        println!("model        {} ({})", self.model, self.model_note);
        println!("layers       {}", self.layers_note);
        if self.quick {
            println!("quick        {}", self.quick_note);
        }
        println!(
            "setup        {}, rank ratio {} (k = floor(ratio * min(N, M)) frozen per target), side {} ({}), {} + {} timed runs, medians",
            self.dtype,
            self.rank_ratio,
            self.side,
            match self.side {
                "left" => "dU_low against U_high",
                "right" => "dV_low against V_high",
                _ => "dU_low against U_high and dV_low against V_high",
            },
            self.warmup_note,
            self.reps
        );
        println!();
        println!(
            "{:<32} {:>12} {:>6} {:>6} {:>6} {:>11} {:>10} {:>8}",
            "targets", "N x M", "k", "R-k", "count", "time/step", "GFLOP/s", "GB/s"
        );
        for t in &self.targets {
            let mut names = t.names.join(",");
            if names.len() > 32 {
                names.truncate(29);
                names.push_str("...");
            }
            println!(
                "{:<32} {:>12} {:>6} {:>6} {:>6} {:>11} {:>10.1} {:>8.1}",
                names,
                format!("{}x{}", t.n, t.m),
                t.k,
                t.r_low,
                t.count,
                human_time(t.time.median_s),
                t.gflops,
                t.gbs
            );
        }
        let s = &self.step;
        println!(
            "{:<32} {:>12} {:>6} {:>6} {:>6} {:>11} {:>10.1} {:>8.1}",
            "step (all included targets)",
            "",
            "",
            "",
            self.target_matrices,
            human_time(s.time.median_s),
            s.gflops,
            s.gbs
        );
        println!();
        println!(
            "projection   {} per step ({:.3} TFLOP, {} moved at least), {:.1} GFLOP/s, {:.1} GB/s",
            human_time(s.time.median_s),
            s.flops / 1e12,
            human_bytes(s.bytes),
            s.gflops,
            s.gbs
        );
        if self.target_matrices < self.target_matrices_whole_model {
            println!(
                "             whole model ({} targets{scaled_note}): {} per step (scaled by flops)",
                self.target_matrices_whole_model,
                human_time(s.whole_model_s)
            );
        }
        let g = &self.gemm_reference;
        let sq = g.square.n;
        println!(
            "{gname:<12} {sq}x{sq}x{sq}: {:.1} GFLOP/s; on the projection's own GEMM shapes: {:.1} GFLOP/s (same run, same executor)",
            g.square.gflops, g.same_shapes.gflops
        );
        println!(
            "fraction     projection = {:.0}% of {gname} ({sq}^3), {:.0}% of {gname} on the same shapes",
            100.0 * self.fraction_of_square_gemm,
            100.0 * self.fraction_of_same_shape_gemm
        );
        self.print_decompose(scaled_note);
        println!("wall time    {}", human_time(self.wall_s));
    }

    fn print_decompose(&self, scaled_note: &str) {
        let d = &self.decompose;
        if d.mode == "none" {
            println!("decompose    skipped (--decompose none)");
            return;
        }
        let how = if d.whole_model_extrapolated {
            format!(
                " — scaled from {} measured on {} matrices{}",
                human_time(d.measured_s),
                d.matrices_decomposed,
                if d.mode == "sample" {
                    " (one per distinct shape; --decompose full decomposes every included matrix)"
                } else {
                    ""
                }
            )
        } else {
            " (measured)".into()
        };
        println!(
            "decompose    whole model ({} matrices{scaled_note}): {}{how}",
            self.target_matrices_whole_model,
            human_time(d.whole_model_s)
        );
        for r in &d.per_shape {
            let how =
                if r.decomposed == 0 { format!("as {}x{}", r.m, r.n) } else { format!("{} measured", r.decomposed) };
            println!(
                "             {:>12} {:>9} per matrix ({how}) x {:>4} in the whole model   ({})",
                format!("{}x{}", r.n, r.m),
                human_time(r.seconds_per_matrix),
                r.count_whole_model,
                r.names
            );
        }
    }
}
