//! The command line (clap): the main job's options, and kernel mode's.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, ValueEnum};
use osft::{DType, Side};

const ABOUT: &str = "osft-bench: projection and SVD throughput of osft on real model shapes";

const LONG_ABOUT: &str = "\
osft-bench: projection and SVD throughput of osft on real model shapes

The main job: `osft-bench [--model NAME | --shape NxM ...] [options]` reports, on the default
executor (CUDA where usable, else the CPU), the time per training step to project every target
matrix's gradients (dU_low against U_high, dV_low against V_high), the achieved GFLOP/s and GB/s,
that as a fraction of the GEMM throughput measured in the same run, and the time to decompose the
whole model.";

const AFTER_HELP: &str = "\
KERNEL MODE (one operation, for benches/compare_peers.py and ad-hoc timing):
    osft-bench --kernel project --shape NxM --k K [--side left|right|both] [--batch B]
    osft-bench --kernel svd     --shape NxM [--batch B]
    osft-bench --kernel gemm    --shape NxM --k K [--batch B]     (C[NxM] = A[NxK] B[KxM])
        [--dtype T] [--reps N] [--warmup N] [--json]
        [--load DIR]  read inputs from DIR (raw little-endian, row-major, the --dtype's type):
                      project: x.bin (B x N x M), u.bin (B x N x K), v.bin (B x K x M)
                      svd: w.bin (B x N x M);  gemm: a.bin, b.bin
        [--save DIR]  write outputs to DIR: project: out.bin (X after the timed runs; projection
                      is idempotent); svd: s.bin (B x min(N,M)); gemm: c.bin";

/// The operation timed in kernel mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernel {
    /// X projected in place against U (left), V (right) or both
    Project,
    /// thin SVD with U, S and Vt written
    Svd,
    /// C = A B, the executor's GEMM
    Gemm,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Project => "project",
            Kernel::Svd => "svd",
            Kernel::Gemm => "gemm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorChoice {
    /// CUDA device 0 where usable, else the CPU
    Auto,
    /// the CPU executor (host memory)
    Cpu,
    /// CUDA device 0 (an error where it is not usable)
    #[value(alias = "gpu")]
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecomposeMode {
    /// one matrix of each distinct shape, scaled up to the whole model (the CPU's default)
    Sample,
    /// every included matrix (the default on CUDA)
    Full,
    /// skip the decomposition
    None,
}

impl DecomposeMode {
    pub fn name(self) -> &'static str {
        match self {
            DecomposeMode::Sample => "sample",
            DecomposeMode::Full => "full",
            DecomposeMode::None => "none",
        }
    }
}

/// The element type of every matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum DTypeArg {
    #[value(alias = "float32", alias = "fp32")]
    F32,
    #[value(alias = "float64", alias = "fp64")]
    F64,
    #[value(alias = "float16", alias = "fp16", alias = "half")]
    F16,
    #[value(alias = "bfloat16")]
    Bf16,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> DType {
        match d {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F64 => DType::F64,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SideArg {
    /// dU_low against U_high and dV_low against V_high
    Both,
    /// dU_low against U_high only
    #[value(alias = "u", alias = "U")]
    Left,
    /// dV_low against V_high only
    #[value(alias = "v", alias = "V")]
    Right,
}

impl From<SideArg> for Side {
    fn from(s: SideArg) -> Side {
        match s {
            SideArg::Both => Side::Both,
            SideArg::Left => Side::Left,
            SideArg::Right => Side::Right,
        }
    }
}

pub fn side_name(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
        Side::Both => "both",
    }
}

#[derive(Clone, Debug, Parser)]
#[command(name = "osft-bench", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Args {
    /// Model preset: llama-3.1-8b (default), llama-2-7b, mistral-7b, qwen2.5-7b, t5-large
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// A custom target shape (out x in); repeatable; replaces --model
    #[arg(long = "shape", value_name = "NxM", value_parser = parse_shape)]
    pub shapes: Vec<(usize, usize)>,

    /// Frozen fraction: k = floor(R * min(N, M)) per target
    #[arg(long, value_name = "R", default_value_t = 0.5, value_parser = parse_ratio)]
    pub rank_ratio: f64,

    /// Element type of every matrix
    #[arg(long, value_name = "T", value_enum, ignore_case = true, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,

    /// Gradients projected
    #[arg(long, value_name = "S", value_enum, default_value_t = SideArg::Both)]
    side: SideArg,

    /// Executor
    #[arg(long, value_name = "E", value_enum, default_value_t = ExecutorChoice::Auto)]
    pub executor: ExecutorChoice,

    /// Transformer layers to include (per stack) [default: all on CUDA, 1 on the CPU]
    ///
    /// A whole 7-8B model takes far too long on a small CPU: by default the CPU runs one layer and
    /// scales its figures to the whole model.
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..),
          conflicts_with = "all_layers")]
    pub layers: Option<usize>,

    /// Include every layer (needs memory: about 2x the model's weights)
    #[arg(long)]
    pub all_layers: bool,

    /// Timed repetitions; the median is reported [default: 3; kernel mode 5]
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub reps: Option<usize>,

    /// Untimed runs first [default: 1 with --quick and in kernel mode, else a light warm-up]
    ///
    /// The light warm-up on full-size shapes is one projection of the smallest target group and
    /// one reference GEMM (it starts the thread pool and allocates the workspace), since a full
    /// step of a 7-8B layer takes seconds.
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,

    /// How much of the model is decomposed [default: sample on the CPU, full on CUDA]
    #[arg(long, value_name = "MODE", value_enum)]
    pub decompose: Option<DecomposeMode>,

    /// A few-second smoke run: every dimension divided by 8, 1 layer
    #[arg(long)]
    pub quick: bool,

    /// Print JSON instead of the table
    #[arg(long)]
    pub json: bool,

    /// Always draw the progress bar (default: only when stderr is a terminal)
    #[arg(long, overrides_with = "no_progress")]
    pub progress: bool,

    /// Never draw the progress bar
    #[arg(long, overrides_with = "progress")]
    pub no_progress: bool,

    /// Print the model presets and exit
    #[arg(long)]
    pub list_models: bool,

    /// Time one operation on one --shape instead of the main job (see below)
    #[arg(long, value_name = "OP", value_enum, help_heading = "Kernel mode")]
    pub kernel: Option<Kernel>,

    /// Frozen rank of the projection, inner dimension of the GEMM
    #[arg(long, value_name = "K", help_heading = "Kernel mode")]
    pub k: Option<usize>,

    /// Matrices in the strided batch
    #[arg(long, value_name = "B", default_value_t = 1, help_heading = "Kernel mode",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub batch: usize,

    /// Read the inputs from DIR (raw files, see below) instead of random values
    #[arg(long, value_name = "DIR", help_heading = "Kernel mode")]
    pub load: Option<PathBuf>,

    /// Write the outputs to DIR (raw files, see below)
    #[arg(long, value_name = "DIR", help_heading = "Kernel mode")]
    pub save: Option<PathBuf>,
}

/// Whether the progress bar is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// Only when stderr is a terminal.
    Auto,
    Always,
    Never,
}

impl Args {
    /// The arguments of this process; exits with clap's message and status 2 on a bad one.
    pub fn from_env() -> Args {
        let a = Args::parse();
        if let Err(msg) = a.check() {
            use clap::CommandFactory;
            Args::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit();
        }
        a
    }

    /// What clap's declarations cannot say.
    fn check(&self) -> Result<(), String> {
        if self.model.is_some() && !self.shapes.is_empty() && self.kernel.is_none() {
            return Err("give --model or --shape, not both".into());
        }
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        self.dtype.into()
    }

    pub fn side(&self) -> Side {
        self.side.into()
    }

    pub fn progress_mode(&self) -> ProgressMode {
        if self.no_progress {
            ProgressMode::Never
        } else if self.progress {
            ProgressMode::Always
        } else {
            ProgressMode::Auto
        }
    }
}

/// `NxM` (or `NXM`), both positive.
pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(['x', 'X']).ok_or_else(|| format!("{s}: expected NxM, e.g. 4096x14336"))?;
    let p = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("{s}: {v:?} is not a positive integer"));
    let (n, m) = (p(a)?, p(b)?);
    if n == 0 || m == 0 {
        return Err(format!("{s}: dimensions must be positive"));
    }
    Ok((n, m))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.trim().parse().map_err(|_| format!("{s}: not a valid number"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("{r}: must be in [0, 1]"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        let a = Args::try_parse_from(std::iter::once("osft-bench").chain(s.split_whitespace()))
            .map_err(|e| e.to_string())?;
        a.check()?;
        Ok(a)
    }

    #[test]
    fn parses() {
        let a = p("--model llama-2-7b --rank-ratio=0.25 --dtype bf16 --side left --layers 2 --json").unwrap();
        assert_eq!(a.model.as_deref(), Some("llama-2-7b"));
        assert_eq!(a.rank_ratio, 0.25);
        assert_eq!(a.dtype(), DType::BF16);
        assert_eq!(a.side(), Side::Left);
        assert_eq!(a.layers, Some(2));
        assert!(a.json);
        let a = p("--shape 4096x1024 --shape 64x64").unwrap();
        assert_eq!(a.shapes, vec![(4096, 1024), (64, 64)]);
        assert_eq!((a.dtype(), a.side(), a.rank_ratio, a.batch), (DType::F32, Side::Both, 0.5, 1));
        let a = p("--kernel project --shape 4096x2048 --k 2048 --reps 5 --model x").unwrap();
        assert_eq!(a.kernel, Some(Kernel::Project));
        assert_eq!(a.k, Some(2048));
        assert_eq!(p("--dtype FP16 --side u").map(|a| (a.dtype(), a.side())), Ok((DType::F16, Side::Left)));
        assert_eq!(p("--executor gpu").map(|a| a.executor), Ok(ExecutorChoice::Cuda));
        assert_eq!(p("--progress --no-progress").map(|a| a.progress_mode()), Ok(ProgressMode::Never));
        assert_eq!(p("--no-progress --progress").map(|a| a.progress_mode()), Ok(ProgressMode::Always));
        for bad in [
            "--shape 4096",
            "--shape 0x4",
            "--rank-ratio 2",
            "--bogus",
            "--layers",
            "--layers 0",
            "--reps 0",
            "--batch 0",
            "--layers 2 --all-layers",
            "--model llama-2-7b --shape 4x4",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn declarations_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
