//! Command-line arguments (hand-rolled: `--name value`, `--name=value`, flags).

use osft::{DType, Side};

use super::util::ProgressMode;

pub const USAGE: &str = "\
osft-bench: projection and SVD throughput of osft on real model shapes

USAGE (the main job):
    osft-bench [--model NAME | --shape NxM ...] [options]

    Reports, on the default executor (CUDA where usable, else the CPU), the time per training
    step to project every target matrix's gradients (dU_low against U_high, dV_low against
    V_high), the achieved GFLOP/s and GB/s, that as a fraction of the GEMM throughput measured
    in the same run, and the time to decompose the whole model.

OPTIONS:
    --model NAME        llama-3.1-8b (default), llama-2-7b, mistral-7b, qwen2.5-7b, t5-large
    --shape NxM         a custom target shape (out x in); repeatable; replaces --model
    --rank-ratio R      frozen fraction: k = floor(R * min(N, M)) per target (default 0.5)
    --dtype T           f32 (default), f64, f16, bf16
    --side S            both (default: dU_low and dV_low), left (dU_low only), right (dV_low only)
    --executor E        auto (default), cpu, cuda
    --layers N          transformer layers to include (per stack); default: all on CUDA, 1 on
                        the CPU (a whole 7-8B model takes far too long on a small CPU)
    --all-layers        include every layer (needs memory: about 2x the model's weights)
    --reps N            timed repetitions (default 3); the median is reported
    --warmup N          untimed runs first (default 1)
    --decompose MODE    sample (default on the CPU: one matrix of each distinct shape, scaled up
                        to the whole model), full (every included matrix), none
    --quick             a few-second smoke run: every dimension divided by 8, 1 layer
    --json              print JSON instead of the table
    --progress          always draw the progress bar (default: only when stderr is a terminal)
    --no-progress       never draw it
    --list-models       print the presets and exit
    -h, --help          this text

KERNEL MODE (one operation, for benches/compare_peers.py and ad-hoc timing):
    osft-bench --kernel project --shape NxM --k K [--side left|right|both] [--batch B]
    osft-bench --kernel svd     --shape NxM [--batch B]
    osft-bench --kernel gemm    --shape NxM --k K [--batch B]     (C[NxM] = A[NxK] B[KxM])
        [--dtype T] [--reps N] [--warmup N] [--json]
        [--load DIR]  read inputs from DIR (raw little-endian, row-major, the --dtype's type):
                      project: x.bin (B x N x M), u.bin (B x N x K), v.bin (B x K x M)
                      svd: w.bin (B x N x M);  gemm: a.bin, b.bin
        [--save DIR]  write outputs to DIR: project: out.bin (X after the timed runs; projection
                      is idempotent); svd: s.bin (B x min(N,M)); gemm: c.bin
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Project,
    Svd,
    Gemm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorChoice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecomposeMode {
    Default,
    Sample,
    Full,
    None,
}

#[derive(Clone, Debug)]
pub struct Args {
    pub model: Option<String>,
    pub shapes: Vec<(usize, usize)>,
    pub rank_ratio: f64,
    pub dtype: DType,
    pub side: Side,
    pub executor: ExecutorChoice,
    pub layers: Option<usize>,
    pub all_layers: bool,
    pub reps: Option<usize>,
    pub warmup: Option<usize>,
    pub decompose: DecomposeMode,
    pub quick: bool,
    pub json: bool,
    pub progress: ProgressMode,
    pub list_models: bool,
    pub help: bool,
    pub kernel: Option<Kernel>,
    pub k: Option<usize>,
    pub batch: usize,
    pub load: Option<std::path::PathBuf>,
    pub save: Option<std::path::PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            model: None,
            shapes: vec![],
            rank_ratio: 0.5,
            dtype: DType::F32,
            side: Side::Both,
            executor: ExecutorChoice::Auto,
            layers: None,
            all_layers: false,
            reps: None,
            warmup: None,
            decompose: DecomposeMode::Default,
            quick: false,
            json: false,
            progress: ProgressMode::Auto,
            list_models: false,
            help: false,
            kernel: None,
            k: None,
            batch: 1,
            load: None,
            save: None,
        }
    }
}

pub fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(['x', 'X']).ok_or_else(|| format!("--shape {s}: expected NxM, e.g. 4096x14336"))?;
    let p = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("--shape {s}: {v:?} is not a positive integer"));
    let (n, m) = (p(a)?, p(b)?);
    if n == 0 || m == 0 {
        return Err(format!("--shape {s}: dimensions must be positive"));
    }
    Ok((n, m))
}

pub fn parse_dtype(s: &str) -> Result<DType, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => DType::F32,
        "f64" | "float64" | "fp64" => DType::F64,
        "f16" | "float16" | "fp16" | "half" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        _ => return Err(format!("--dtype {s}: expected f32, f64, f16 or bf16")),
    })
}

pub fn side_name(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
        Side::Both => "both",
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag} {v}: not a valid number"))
}

pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.into_iter().peekable();
    while let Some(raw) = it.next() {
        let (flag, inline) = match raw.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (raw.clone(), None),
        };
        let value = |it: &mut std::iter::Peekable<_>| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => Iterator::next(it).ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => a.help = true,
            "--model" => a.model = Some(value(&mut it)?),
            "--shape" => a.shapes.push(parse_shape(&value(&mut it)?)?),
            "--rank-ratio" => {
                let r: f64 = num(&flag, &value(&mut it)?)?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("--rank-ratio {r}: must be in [0, 1]"));
                }
                a.rank_ratio = r;
            }
            "--dtype" => a.dtype = parse_dtype(&value(&mut it)?)?,
            "--side" => {
                a.side = match value(&mut it)?.as_str() {
                    "left" | "u" | "U" => Side::Left,
                    "right" | "v" | "V" => Side::Right,
                    "both" => Side::Both,
                    s => return Err(format!("--side {s}: expected left, right or both")),
                }
            }
            "--executor" => {
                a.executor = match value(&mut it)?.as_str() {
                    "auto" => ExecutorChoice::Auto,
                    "cpu" => ExecutorChoice::Cpu,
                    "cuda" | "gpu" => ExecutorChoice::Cuda,
                    s => return Err(format!("--executor {s}: expected auto, cpu or cuda")),
                }
            }
            "--layers" => {
                let l: usize = num(&flag, &value(&mut it)?)?;
                if l == 0 {
                    return Err("--layers must be at least 1".into());
                }
                a.layers = Some(l);
            }
            "--all-layers" => a.all_layers = true,
            "--reps" => {
                let r: usize = num(&flag, &value(&mut it)?)?;
                if r == 0 {
                    return Err("--reps must be at least 1".into());
                }
                a.reps = Some(r);
            }
            "--warmup" => a.warmup = Some(num(&flag, &value(&mut it)?)?),
            "--decompose" => {
                a.decompose = match value(&mut it)?.as_str() {
                    "sample" => DecomposeMode::Sample,
                    "full" => DecomposeMode::Full,
                    "none" => DecomposeMode::None,
                    s => return Err(format!("--decompose {s}: expected sample, full or none")),
                }
            }
            "--quick" => a.quick = true,
            "--json" => a.json = true,
            "--progress" => a.progress = ProgressMode::Always,
            "--no-progress" => a.progress = ProgressMode::Never,
            "--list-models" => a.list_models = true,
            "--kernel" => {
                a.kernel = Some(match value(&mut it)?.as_str() {
                    "project" => Kernel::Project,
                    "svd" => Kernel::Svd,
                    "gemm" => Kernel::Gemm,
                    s => return Err(format!("--kernel {s}: expected project, svd or gemm")),
                })
            }
            "--k" => a.k = Some(num(&flag, &value(&mut it)?)?),
            "--batch" => {
                let b: usize = num(&flag, &value(&mut it)?)?;
                if b == 0 {
                    return Err("--batch must be at least 1".into());
                }
                a.batch = b;
            }
            "--load" => a.load = Some(value(&mut it)?.into()),
            "--save" => a.save = Some(value(&mut it)?.into()),
            _ => return Err(format!("unknown argument {raw:?} (see --help)")),
        }
    }
    if a.model.is_some() && !a.shapes.is_empty() && a.kernel.is_none() {
        return Err("give --model or --shape, not both".into());
    }
    if a.layers.is_some() && a.all_layers {
        return Err("give --layers or --all-layers, not both".into());
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses() {
        let a = p("--model llama-2-7b --rank-ratio=0.25 --dtype bf16 --side left --layers 2 --json").unwrap();
        assert_eq!(a.model.as_deref(), Some("llama-2-7b"));
        assert_eq!(a.rank_ratio, 0.25);
        assert_eq!(a.dtype, DType::BF16);
        assert_eq!(a.side, Side::Left);
        assert_eq!(a.layers, Some(2));
        assert!(a.json);
        let a = p("--shape 4096x1024 --shape 64x64").unwrap();
        assert_eq!(a.shapes, vec![(4096, 1024), (64, 64)]);
        let a = p("--kernel project --shape 4096x2048 --k 2048 --reps 5").unwrap();
        assert_eq!(a.kernel, Some(Kernel::Project));
        assert_eq!(a.k, Some(2048));
        assert!(p("--shape 4096").is_err());
        assert!(p("--rank-ratio 2").is_err());
        assert!(p("--bogus").is_err());
        assert!(p("--layers").is_err());
    }
}
