//! The Rust table of kernel signatures (`exec::cuda::signatures`), which every kernel launch is
//! checked against, matches `kernels.cu` exactly: the same kernels, and for each the same
//! parameters (count, order, names, C type → Rust type). The kernels are read from the source
//! NVRTC compiles, with its function-like macros expanded, so the macro-generated families
//! (`osft_axpby_{s}_{d}`, `osft_dgmm_{t}`, ...) are checked kernel by kernel. Runs on any machine.
#![cfg(feature = "cuda")]

use std::any::type_name;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;

use osft::exec::cuda::nvrtc::{self, KERNEL_SOURCE};
use osft::exec::cuda::signatures::{self, ArgType, FAMILIES};

/// Kernel name → its parameters as (name, Rust type name).
type Signatures = BTreeMap<String, Vec<(String, String)>>;

/// The Rust type that carries each C parameter type of the kernels (after typedefs).
fn rust_type_of(c: &str) -> Option<&'static str> {
    Some(match c {
        "int" => type_name::<i32>(),
        "long long" => type_name::<i64>(),
        "unsigned long long" => type_name::<u64>(),
        "double" => type_name::<f64>(),
        "const void*" => type_name::<*const c_void>(),
        "void*" => type_name::<*mut c_void>(),
        "double*" => type_name::<*mut f64>(),
        "unsigned long long*" => type_name::<*mut u64>(),
        _ => return None,
    })
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Split `s` at top-level commas (outside parentheses).
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (vec![], String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The text between the parenthesis at byte `open` and its match, and the index after the match.
fn balanced(s: &str, open: usize) -> (&str, usize) {
    let mut depth = 0;
    for (i, c) in s[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return (&s[open + 1..open + i], open + i + 1);
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in kernels.cu after byte {open}");
}

struct Macro {
    params: Vec<String>,
    body: String,
}

/// Replace each identifier of `body` that is a macro parameter by its argument, then paste `##`.
fn substitute(m: &Macro, args: &[String]) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match m.params.iter().position(|p| p == word) {
            Some(i) => out.push_str(&args[i]),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in m.body.chars() {
        if is_ident(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    // Token pasting: `a ## b` -> `ab`.
    while let Some(i) = out.find("##") {
        let before = out[..i].trim_end().len();
        let after = i + 2 + (out[i + 2..].len() - out[i + 2..].trim_start().len());
        out.replace_range(before..after, "");
    }
    out
}

/// Expand invocations of the function-like macros in `text`, recursively.
fn expand(text: &str, macros: &HashMap<String, Macro>, depth: usize) -> String {
    assert!(depth < 16, "macro expansion too deep");
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap();
        if !is_ident(c) {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let end = text[i..].find(|c: char| !is_ident(c)).map_or(text.len(), |e| i + e);
        let word = &text[i..end];
        let rest = &text[end..];
        let open = end + (rest.len() - rest.trim_start().len());
        match macros.get(word) {
            Some(m) if text[open..].starts_with('(') => {
                let (inner, next) = balanced(text, open);
                let args = split_args(inner);
                assert_eq!(args.len(), m.params.len(), "macro {word} invoked with {} arguments", args.len());
                out.push_str(&expand(&substitute(m, &args), macros, depth + 1));
                i = next;
            }
            _ => {
                out.push_str(word);
                i = end;
            }
        }
    }
    out
}

/// The `extern "C" __global__ void` kernels of a CUDA source and their parameter lists, macro
/// families expanded, typedefs resolved, C types mapped to Rust types.
fn parse_kernels(source: &str) -> Result<Signatures, String> {
    let joined = source.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut macros = HashMap::new();
    let mut typedefs = HashMap::new();
    let mut top = String::new();
    for line in joined.lines() {
        let line = line.split("//").next().unwrap();
        let t = line.trim_start();
        if let Some(def) = t.strip_prefix("#define") {
            let def = def.trim_start();
            let name_end = def.find(|c: char| !is_ident(c)).unwrap_or(def.len());
            if def[name_end..].starts_with('(') {
                let (params, body) = balanced(def, name_end);
                let m = Macro { params: split_args(params), body: def[body..].to_string() };
                macros.insert(def[..name_end].to_string(), m);
            }
        } else if t.starts_with('#') {
        } else if let Some(td) = t.strip_prefix("typedef ") {
            let words: Vec<&str> = td.trim_end().trim_end_matches(';').split_whitespace().collect();
            let (alias, ty) = words.split_last().ok_or("empty typedef")?;
            typedefs.insert(alias.to_string(), ty.join(" "));
        } else {
            top.push_str(line);
            top.push('\n');
        }
    }
    let text = expand(&top, &macros, 0);
    let mut kernels = Signatures::new();
    let marker = "extern \"C\" __global__ void";
    let mut rest = text.as_str();
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let open = after.find('(').ok_or("kernel without a parameter list")?;
        let name = after[..open].trim().to_string();
        let (params, next) = balanced(after, open);
        let mut list = vec![];
        for param in split_args(params) {
            let param = param.replace('*', " * ");
            let mut words: Vec<String> = param.split_whitespace().map(String::from).collect();
            let pname = words.pop().ok_or_else(|| format!("{name}: empty parameter"))?;
            let words: Vec<String> = words.into_iter().map(|w| typedefs.get(&w).cloned().unwrap_or(w)).collect();
            let c_type = words.join(" ").replace(" *", "*");
            let rust = rust_type_of(&c_type).ok_or_else(|| {
                format!("{name}: parameter {pname} has C type `{c_type}`, which no Rust type carries")
            })?;
            list.push((pname, rust.to_string()));
        }
        if kernels.insert(name.clone(), list).is_some() {
            return Err(format!("kernel {name} defined twice"));
        }
        rest = &after[next..];
    }
    Ok(kernels)
}

/// The signatures the Rust table states, one entry per kernel.
fn table() -> Signatures {
    let mut t = Signatures::new();
    for f in FAMILIES {
        for name in f.names() {
            let params = f.params.iter().map(|p| (p.name.to_string(), p.ty.rust_type().to_string())).collect();
            assert!(t.insert(name.clone(), params).is_none(), "{name} in two families");
        }
    }
    t
}

/// Every difference between the kernels' parameter lists and the table's.
fn differences(kernels: &Signatures, table: &Signatures) -> Vec<String> {
    let mut d = vec![];
    for (name, params) in kernels {
        let Some(expected) = table.get(name) else {
            d.push(format!("{name} is in kernels.cu but not in the table"));
            continue;
        };
        if params.len() != expected.len() {
            d.push(format!("{name}: kernels.cu has {} parameters, the table {}", params.len(), expected.len()));
        }
        for (i, (k, t)) in params.iter().zip(expected).enumerate() {
            if k != t {
                d.push(format!("{name}: parameter {i} is {} {} in kernels.cu, {} {} in the table", k.1, k.0, t.1, t.0));
            }
        }
    }
    for name in table.keys().filter(|n| !kernels.contains_key(*n)) {
        d.push(format!("{name} is in the table but not in kernels.cu"));
    }
    d
}

#[test]
fn table_matches_every_kernel_of_kernels_cu() {
    let kernels = parse_kernels(KERNEL_SOURCE).unwrap();
    assert_eq!(kernels.len(), 33, "{:?}", kernels.keys().collect::<Vec<_>>());
    let d = differences(&kernels, &table());
    assert!(d.is_empty(), "the signature table and kernels.cu differ:\n{}", d.join("\n"));
    // The executor loads (and the compile test looks for) exactly these kernels.
    let mut loaded = nvrtc::kernel_names();
    loaded.sort();
    assert_eq!(loaded, kernels.keys().cloned().collect::<Vec<_>>());
    for name in kernels.keys() {
        assert!(signatures::family(name).is_some(), "{name}");
    }
}

#[test]
fn launch_value_types_are_the_table_types() {
    assert_eq!(ArgType::of::<i32>().rust_type(), type_name::<i32>());
    assert_eq!(ArgType::of::<i64>().rust_type(), type_name::<i64>());
    assert_eq!(ArgType::of::<u64>().rust_type(), type_name::<u64>());
    assert_eq!(ArgType::of::<f64>().rust_type(), type_name::<f64>());
    assert_eq!(ArgType::of::<*const c_void>().rust_type(), type_name::<*const c_void>());
    assert_eq!(ArgType::of::<*mut c_void>().rust_type(), type_name::<*mut c_void>());
    assert_eq!(ArgType::of::<*mut f64>().rust_type(), type_name::<*mut f64>());
    assert_eq!(ArgType::of::<*mut u64>().rust_type(), type_name::<*mut u64>());
}

#[test]
fn launch_check_follows_the_table() {
    use osft::Error;
    for f in FAMILIES {
        let types: Vec<ArgType> = f.params.iter().map(|p| p.ty).collect();
        for name in f.names() {
            signatures::check_args(&name, &types).unwrap();
            assert!(matches!(signatures::check_args(&name, &types[1..]), Err(Error::Internal(_))));
            let mut retyped = types.clone();
            retyped[0] = if retyped[0] == ArgType::I64 { ArgType::U64 } else { ArgType::I64 };
            assert!(matches!(signatures::check_args(&name, &retyped), Err(Error::Internal(_))));
        }
    }
    assert!(matches!(signatures::check_args("osft_no_such_kernel", &[]), Err(Error::Internal(_))));
}

/// Apply one textual edit to the kernel source (which must occur exactly once).
fn edited(from: &str, to: &str) -> String {
    assert_eq!(KERNEL_SOURCE.matches(from).count(), 1, "`{from}` must occur once in kernels.cu");
    KERNEL_SOURCE.replacen(from, to, 1)
}

#[test]
fn a_changed_kernel_or_table_is_a_difference() {
    let table = table();
    let kernels_of = |src: &str| parse_kernels(src).unwrap();
    let expect_diff = |what: &str, k: &Signatures, t: &Signatures| {
        let d = differences(k, t);
        assert!(!d.is_empty(), "{what}: not detected");
        eprintln!("{what}: {}", d[0]);
    };
    // kernels.cu edits: in a macro family (every kernel of it differs) and in a plain kernel.
    let cases = [
        ("parameter added", "double alpha) {", "double alpha, i64 extra) {"),
        ("parameter removed", "i64 len, const void* a, i64 aes", "const void* a, i64 aes"),
        ("parameters reordered", "i64 lda, i64 sa,", "i64 sa, i64 lda,"),
        ("parameter retyped", "i64 bs, double* out", "i64 bs, unsigned long long* out"),
        ("pointer constness changed", "void* l, i64 les", "const void* l, i64 les"),
        ("parameter retyped in fill_ptrs", "unsigned long long* pc)", "double* pc)"),
        ("int retyped", "void osft_dgmm_##T(int left", "void osft_dgmm_##T(i64 left"),
        ("parameter renamed", "i64 rlen, void* r", "i64 rlen, void* rr"),
        ("family gains a dtype", "COSINE(f64)\n", "COSINE(f64)\nCOSINE(f16)\n"),
    ];
    for (what, from, to) in cases {
        expect_diff(what, &kernels_of(&edited(from, to)), &table);
    }
    // Table edits.
    let kernels = kernels_of(KERNEL_SOURCE);
    let mut t = table.clone();
    t.get_mut("osft_axpby_f16_bf16").unwrap().pop();
    expect_diff("table parameter removed", &kernels, &t);
    let mut t = table.clone();
    t.get_mut("osft_fill_ptrs").unwrap().swap(0, 1);
    expect_diff("table parameters reordered", &kernels, &t);
    let mut t = table.clone();
    t.get_mut("osft_sum_squares_f32").unwrap()[6].1 = type_name::<*mut u64>().into();
    expect_diff("table parameter retyped", &kernels, &t);
    let mut t = table.clone();
    t.remove("osft_sign_fix_f64");
    expect_diff("table kernel removed", &kernels, &t);
    // A C type no Rust type carries is refused by the parser itself.
    assert!(parse_kernels(&edited("i64 bs, double* out", "i64 bs, float* out")).is_err());
}
