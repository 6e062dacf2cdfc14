//! The parameter lists of the kernels in `kernels.cu`, as one Rust table.
//!
//! Every launch states its arguments as typed Rust values (see [`KernelArg`]); before
//! `cuLaunchKernel` the launch compares their types, in order, with the kernel's entry in
//! [`FAMILIES`] and refuses a mismatch with `Error::Internal`. A test parses `kernels.cu`
//! (expanding its macro-generated families) and checks that this table matches every kernel's
//! parameter list exactly, so the kernels, the table and the launches cannot drift apart
//! unnoticed on a machine without a GPU.
//!
//! C types map to Rust types one to one: `int` → `i32`, `i64` (`long long`) → `i64`,
//! `unsigned long long` → `u64`, `double` → `f64`, `const void*` → `*const c_void`,
//! `void*` → `*mut c_void`, `double*` → `*mut f64`, `unsigned long long*` → `*mut u64`. Pointer
//! arguments hold device addresses.

use std::ffi::c_void;

use crate::error::{Error, Result};

/// The type of one kernel parameter, as the Rust type a launch passes for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// C `int`.
    I32,
    /// C `long long` (`i64` in `kernels.cu`).
    I64,
    /// C `unsigned long long`.
    U64,
    /// C `double`.
    F64,
    /// C `const void*`: a device address, read only.
    ConstPtr,
    /// C `void*`: a device address, written.
    MutPtr,
    /// C `double*`: a device address of `f64`s, written.
    F64Ptr,
    /// C `unsigned long long*`: a device address of `u64`s, written.
    U64Ptr,
}

impl ArgType {
    /// The Rust type's name, as [`std::any::type_name`] writes it.
    pub fn rust_type(self) -> &'static str {
        use std::any::type_name;
        match self {
            ArgType::I32 => type_name::<i32>(),
            ArgType::I64 => type_name::<i64>(),
            ArgType::U64 => type_name::<u64>(),
            ArgType::F64 => type_name::<f64>(),
            ArgType::ConstPtr => type_name::<*const c_void>(),
            ArgType::MutPtr => type_name::<*mut c_void>(),
            ArgType::F64Ptr => type_name::<*mut f64>(),
            ArgType::U64Ptr => type_name::<*mut u64>(),
        }
    }

    /// The type of `T`'s kernel arguments.
    pub fn of<T: KernelArg>() -> ArgType {
        T::TYPE
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust value that can be passed to a kernel parameter: plain data of at most 8 bytes, whose
/// bytes are what the kernel receives. Implemented for exactly the types of [`ArgType`].
pub trait KernelArg: Copy + sealed::Sealed + 'static {
    /// The parameter type this value fills.
    const TYPE: ArgType;
    /// The value's bytes in native order, at the start of an 8-byte slot (the rest zero).
    fn to_slot(self) -> u64;
}

macro_rules! kernel_arg {
    ($($t:ty => $v:ident, |$x:ident| $slot:expr;)*) => {$(
        impl sealed::Sealed for $t {}
        impl KernelArg for $t {
            const TYPE: ArgType = ArgType::$v;
            fn to_slot(self) -> u64 {
                let $x = self;
                $slot
            }
        }
    )*};
}
kernel_arg!(
    i32 => I32, |x| {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&x.to_ne_bytes());
        u64::from_ne_bytes(b)
    };
    i64 => I64, |x| u64::from_ne_bytes(x.to_ne_bytes());
    u64 => U64, |x| x;
    f64 => F64, |x| x.to_bits();
    *const c_void => ConstPtr, |x| x as usize as u64;
    *mut c_void => MutPtr, |x| x as usize as u64;
    *mut f64 => F64Ptr, |x| x as usize as u64;
    *mut u64 => U64Ptr, |x| x as usize as u64;
);

/// One kernel parameter: its name in `kernels.cu` and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The parameter's name in `kernels.cu`.
    pub name: &'static str,
    /// Its type.
    pub ty: ArgType,
}

/// A kernel family: the kernels `{prefix}`, `{prefix}_{s}` or `{prefix}_{s}_{d}` (the dtype
/// suffixes of a macro-generated family) that share one parameter list.
#[derive(Clone, Copy, Debug)]
pub struct KernelFamily {
    /// The name without dtype suffixes, e.g. `osft_axpby`.
    pub prefix: &'static str,
    /// The dtype suffixes, one list per suffix position (none for a single kernel).
    pub suffixes: &'static [&'static [&'static str]],
    /// The parameters, in order.
    pub params: &'static [Param],
}

impl KernelFamily {
    /// The kernels of this family, every combination of suffixes, first position outermost.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.prefix.to_string()];
        for position in self.suffixes {
            names = names.iter().flat_map(|n| position.iter().map(move |s| format!("{n}_{s}"))).collect();
        }
        names
    }

    /// Whether `name` is one of this family's kernels.
    pub fn contains(&self, name: &str) -> bool {
        let Some(mut rest) = name.strip_prefix(self.prefix) else { return false };
        for position in self.suffixes {
            let Some(r) = rest.strip_prefix('_') else { return false };
            match position.iter().find(|s| r.starts_with(**s)) {
                Some(s) => rest = &r[s.len()..],
                None => return false,
            }
        }
        rest.is_empty()
    }
}

const ALL: &[&str] = &["f32", "f64", "f16", "bf16"];
const COMPUTE: &[&str] = &["f32", "f64"];

const fn p(name: &'static str, ty: ArgType) -> Param {
    Param { name, ty }
}
use ArgType::*;

/// The reductions' parameters (`osft_sum_squares_*`, `osft_count_nonfinite_*`) up to `out`.
macro_rules! reduce_params {
    ($out:expr) => {
        &[p("rows", I64), p("cols", I64), p("x", ConstPtr), p("rs", I64), p("cs", I64), p("bs", I64), p("out", $out)]
    };
}

/// Every kernel of `kernels.cu`, by family.
pub const FAMILIES: &[KernelFamily] = &[
    KernelFamily {
        prefix: "osft_axpby",
        suffixes: &[ALL, ALL],
        params: &[
            p("rows", I64),
            p("cols", I64),
            p("batch", I64),
            p("alpha", F64),
            p("src", ConstPtr),
            p("srs", I64),
            p("scs", I64),
            p("sbs", I64),
            p("beta", F64),
            p("dst", MutPtr),
            p("drs", I64),
            p("dcs", I64),
            p("dbs", I64),
        ],
    },
    KernelFamily { prefix: "osft_sum_squares", suffixes: &[ALL], params: reduce_params!(F64Ptr) },
    KernelFamily { prefix: "osft_count_nonfinite", suffixes: &[ALL], params: reduce_params!(U64Ptr) },
    KernelFamily {
        prefix: "osft_dgmm",
        suffixes: &[COMPUTE],
        params: &[
            p("left", I32),
            p("m", I64),
            p("n", I64),
            p("a", ConstPtr),
            p("lda", I64),
            p("sa", I64),
            p("x", ConstPtr),
            p("incx", I64),
            p("sx", I64),
            p("c", MutPtr),
            p("ldc", I64),
            p("sc", I64),
            p("batch", I64),
        ],
    },
    KernelFamily {
        prefix: "osft_add_diagonal",
        suffixes: &[COMPUTE],
        params: &[p("n", I64), p("a", MutPtr), p("ld", I64), p("stride", I64), p("batch", I64), p("alpha", F64)],
    },
    KernelFamily {
        prefix: "osft_cosine",
        suffixes: &[COMPUTE],
        params: &[
            p("len", I64),
            p("a", ConstPtr),
            p("aes", I64),
            p("avs", I64),
            p("b", ConstPtr),
            p("bes", I64),
            p("bvs", I64),
            p("out", F64Ptr),
        ],
    },
    KernelFamily {
        prefix: "osft_sign_fix",
        suffixes: &[COMPUTE],
        params: &[
            p("llen", I64),
            p("l", MutPtr),
            p("les", I64),
            p("lvs", I64),
            p("lbs", I64),
            p("rlen", I64),
            p("r", MutPtr),
            p("res", I64),
            p("rvs", I64),
            p("rbs", I64),
        ],
    },
    KernelFamily {
        prefix: "osft_fill_ptrs",
        suffixes: &[],
        params: &[
            p("count", I64),
            p("a", U64),
            p("sa", I64),
            p("b", U64),
            p("sb", I64),
            p("c", U64),
            p("sc", I64),
            p("pa", U64Ptr),
            p("pb", U64Ptr),
            p("pc", U64Ptr),
        ],
    },
];

/// The family of kernel `name`, if it is one of [`FAMILIES`].
pub fn family(name: &str) -> Option<&'static KernelFamily> {
    FAMILIES.iter().find(|f| f.contains(name))
}

/// Every kernel name of [`FAMILIES`], in table order.
pub fn kernel_names() -> Vec<String> {
    FAMILIES.iter().flat_map(|f| f.names()).collect()
}

/// Check a launch's argument types, in order, against kernel `name`'s parameter list:
/// `Error::Internal` for an unknown kernel, a different count, or a different type.
pub fn check_args(name: &str, args: &[ArgType]) -> Result<()> {
    let f = family(name).ok_or_else(|| Error::Internal(format!("launch of unknown kernel {name}")))?;
    if f.params.len() != args.len() {
        return Err(Error::Internal(format!(
            "launch of {name} with {} arguments; the kernel takes {}",
            args.len(),
            f.params.len()
        )));
    }
    for (i, (param, &ty)) in f.params.iter().zip(args).enumerate() {
        if param.ty != ty {
            return Err(Error::Internal(format!(
                "launch of {name}: argument {i} ({}) is {}; the kernel takes {}",
                param.name,
                ty.rust_type(),
                param.ty.rust_type()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_expand_and_match_back() {
        let names = kernel_names();
        assert_eq!(names.len(), 16 + 4 + 4 + 2 * 4 + 1);
        assert!(names.contains(&"osft_axpby_bf16_f16".to_string()));
        assert!(names.contains(&"osft_fill_ptrs".to_string()));
        for n in &names {
            assert!(family(n).is_some(), "{n}");
        }
        for bad in ["osft_axpby_f32", "osft_axpby_f32_f64_f16", "osft_dgmm_f16", "osft_fill_ptrs_f32", "osft_cosin_f32"]
        {
            assert!(family(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn check_args_refuses_count_and_type_mismatches() {
        let ok = [I64, ConstPtr, I64, I64, ConstPtr, I64, I64, F64Ptr];
        check_args("osft_cosine_f64", &ok).unwrap();
        let err = |r: Result<()>| matches!(r, Err(Error::Internal(_)));
        assert!(err(check_args("osft_cosine_f64", &ok[..7])));
        let mut retyped = ok;
        retyped[7] = U64Ptr;
        assert!(err(check_args("osft_cosine_f64", &retyped)));
        assert!(err(check_args("osft_cosine_f16", &ok)));
        assert!(err(check_args("osft_sum_squares_f32", &[I64, I64, ConstPtr, I64, I64, I64, U64Ptr])));
        check_args("osft_count_nonfinite_f32", &[I64, I64, ConstPtr, I64, I64, I64, U64Ptr]).unwrap();
    }
}
