//! Kernel mode's input and output files: raw little-endian elements, row-major, no header.

use std::path::Path;

use osft::Element;

const _: () = assert!(cfg!(target_endian = "little"), "raw files are little-endian");

/// The elements of `v` as bytes.
pub fn as_bytes<T: Element>(v: &[T]) -> &[u8] {
    // SAFETY: f32/f64/f16/bf16 are plain old data without padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// The elements of `v` as writable bytes.
pub fn as_bytes_mut<T: Element>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid f32/f64/f16/bf16.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// Exactly `len` elements of `T` from `path`.
pub fn read_raw<T: Element>(path: &Path, len: usize) -> Result<Vec<T>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = T::DTYPE.size();
    if bytes.len() != len * size {
        return Err(format!(
            "{}: {} bytes, expected {} ({} elements of {})",
            path.display(),
            bytes.len(),
            len * size,
            len,
            T::DTYPE.name()
        ));
    }
    let mut v: Vec<T> = vec![T::from_f32(0.0); len];
    as_bytes_mut(&mut v).copy_from_slice(&bytes);
    Ok(v)
}

pub fn write_raw<T: Element>(path: &Path, v: &[T]) -> Result<(), String> {
    std::fs::write(path, as_bytes(v)).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("osft-bench-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.bin");
        write_raw(&p, &[1.0f32, -2.5, 3.0]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 12);
        assert_eq!(read_raw::<f32>(&p, 3).unwrap(), vec![1.0, -2.5, 3.0]);
        assert!(read_raw::<f32>(&p, 4).unwrap_err().contains("12 bytes, expected 16"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
