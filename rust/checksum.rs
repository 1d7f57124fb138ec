//! CRC-32 checksums of files in the `crc32:xxxxxxxx` form shared with the Python backend.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Formats a CRC-32 value as phasekit writes it.
pub fn format_crc32(crc: u32) -> String {
    format!("crc32:{crc:08x}")
}

/// CRC-32 (zlib polynomial) of a file's bytes.
pub fn file_crc32(path: &Path) -> io::Result<u32> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn crc_matches_zlib_reference() {
        // zlib.crc32(b"123456789") == 0xcbf43926
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        File::create(&path)
            .unwrap()
            .write_all(b"123456789")
            .unwrap();
        assert_eq!(format_crc32(file_crc32(&path).unwrap()), "crc32:cbf43926");
    }
}
