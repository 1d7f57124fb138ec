//! AES-GCM over runs of chunks of phasekit's encrypted file format
//! (`python/phasekit/crypt/aead.py` describes the format).
//!
//! Chunk `i` of a file is `chunk_bytes` bytes of plaintext (the final chunk: the rest,
//! possibly none) sealed with the file's data key under the nonce `prefix || i` (the
//! 8-byte prefix of its header, `i` as 4 big-endian bytes) and the associated data
//! `ad_prefix || i (8 bytes, big-endian) || final flag (1 byte)`, followed by its
//! 16-byte tag. Standard GCM: the Python backend's `cryptography` reads what this
//! writes and the other way round.
//!
//! [`Chunks::seal`] and [`Chunks::open`] take a run of consecutive chunks starting at
//! any index, write into a buffer the caller gives, and spread the chunks over scoped
//! threads (at most [`threads_for`]) that take them one at a time. AWS-LC
//! (`aws-lc-rs`) runs AES and GHASH on the CPU's instructions (AES-NI/VAES,
//! PCLMULQDQ/VPCLMULQDQ) chosen at run time, reading one buffer and writing the other
//! (no staging copy).

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use parking_lot::Mutex;

/// Bytes of a chunk's authentication tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of the nonce prefix (the rest of the 12-byte nonce is the chunk index).
pub const NONCE_PREFIX_BYTES: usize = 8;
/// Most threads one call uses.
pub const MAX_THREADS: usize = 8;
/// The longest chunk GCM can seal under one nonce (2**36 - 32 bytes).
pub const MAX_CHUNK_BYTES: u64 = (1 << 36) - 32;

/// What a call refuses; [`AeadError::Chunk`] is a chunk failing authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeadError {
    /// A key of this many bytes (16 or 32 are allowed).
    Key(usize),
    /// A nonce prefix of this many bytes.
    NoncePrefix(usize),
    /// A chunk size of 0 or over [`MAX_CHUNK_BYTES`].
    ChunkBytes(usize),
    /// Chunk indexes past 2**64.
    Index { first: u64, chunks: usize },
    /// Input that is not whole chunks although the run does not end the file.
    NotWhole { len: usize, step: usize },
    /// An encrypted run too short for its final chunk's tag.
    Truncated { len: usize },
    /// An output buffer of the wrong size.
    Output { expected: usize, got: usize },
    /// Input and output buffers overlap.
    Overlap,
    /// A chunk too long for GCM.
    TooLong,
    /// A worker thread panicked.
    Panicked,
    /// Chunk `index` (of the file) fails authentication.
    Chunk(u64),
}

impl fmt::Display for AeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(n) => write!(f, "an AES-GCM key has 16 or 32 bytes, got {n}"),
            Self::NoncePrefix(n) => {
                write!(
                    f,
                    "the nonce prefix has {NONCE_PREFIX_BYTES} bytes, got {n}"
                )
            }
            Self::ChunkBytes(n) => {
                write!(f, "chunk_bytes must be in 1..{MAX_CHUNK_BYTES}, got {n}")
            }
            Self::Index { first, chunks } => write!(
                f,
                "{chunks} chunks from index {first} pass the largest index (2**64 - 1)"
            ),
            Self::NotWhole { len, step } => write!(
                f,
                "{len} bytes are not whole chunks of {step} bytes (only the last run of a \
                 file may end with a partial chunk)"
            ),
            Self::Truncated { len } => write!(
                f,
                "{len} encrypted bytes are too few for a final chunk (at least {TAG_BYTES})"
            ),
            Self::Output { expected, got } => {
                write!(
                    f,
                    "the output buffer has {got} bytes, {expected} are needed"
                )
            }
            Self::Overlap => write!(f, "the input and output buffers overlap"),
            Self::TooLong => write!(f, "a chunk is too long for AES-GCM"),
            Self::Panicked => write!(f, "an AES-GCM worker thread panicked"),
            Self::Chunk(index) => write!(f, "chunk {index} fails authentication"),
        }
    }
}

impl std::error::Error for AeadError {}

/// Threads for `chunks` chunks: one per chunk up to the available parallelism
/// (at most [`MAX_THREADS`]).
pub fn threads_for(chunks: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_THREADS)
    });
    cores.min(chunks).max(1)
}

/// The chunk layout of one file under one data key.
pub struct Chunks {
    key: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_BYTES],
    ad_prefix: Vec<u8>,
    chunk_bytes: usize,
}

/// One chunk of a run: its index in the file, whether it is the file's final chunk, and
/// its input and output bytes.
struct Job<'i, 'o> {
    index: u64,
    last: bool,
    input: &'i [u8],
    output: &'o mut [u8],
}

impl Chunks {
    /// The chunks of a file: its data `key` (16 or 32 bytes), the nonce prefix of its
    /// header, the associated data before each chunk's index and final flag.
    pub fn new(
        key: &[u8],
        nonce_prefix: &[u8],
        ad_prefix: &[u8],
        chunk_bytes: usize,
    ) -> Result<Self, AeadError> {
        let algorithm = match key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            n => return Err(AeadError::Key(n)),
        };
        let unbound = UnboundKey::new(algorithm, key).map_err(|_| AeadError::Key(key.len()))?;
        let nonce_prefix: [u8; NONCE_PREFIX_BYTES] = nonce_prefix
            .try_into()
            .map_err(|_| AeadError::NoncePrefix(nonce_prefix.len()))?;
        if chunk_bytes == 0 || chunk_bytes as u64 > MAX_CHUNK_BYTES {
            return Err(AeadError::ChunkBytes(chunk_bytes));
        }
        Ok(Self {
            key: LessSafeKey::new(unbound),
            nonce_prefix,
            ad_prefix: ad_prefix.to_vec(),
            chunk_bytes,
        })
    }

    /// Chunks in `len` plaintext bytes of a run (`last`: it ends the file, so its final
    /// chunk may be partial or empty).
    pub fn plain_chunks(&self, len: usize, last: bool) -> Result<usize, AeadError> {
        if last {
            Ok(len.div_ceil(self.chunk_bytes).max(1))
        } else if len % self.chunk_bytes == 0 {
            Ok(len / self.chunk_bytes)
        } else {
            Err(AeadError::NotWhole {
                len,
                step: self.chunk_bytes,
            })
        }
    }

    /// Chunks in `len` encrypted bytes of a run.
    pub fn sealed_chunks(&self, len: usize, last: bool) -> Result<usize, AeadError> {
        let step = self.chunk_bytes + TAG_BYTES;
        if !last {
            return if len % step == 0 {
                Ok(len / step)
            } else {
                Err(AeadError::NotWhole { len, step })
            };
        }
        let chunks = len.div_ceil(step).max(1);
        if len < (chunks - 1) * step + TAG_BYTES {
            return Err(AeadError::Truncated { len });
        }
        Ok(chunks)
    }

    fn nonce(&self, index: u64) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_BYTES].copy_from_slice(&self.nonce_prefix);
        // the nonce holds the index modulo 2**32, the associated data all of it
        nonce[NONCE_PREFIX_BYTES..].copy_from_slice(&(index as u32).to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    fn aad<'b>(&self, buf: &'b mut Vec<u8>, index: u64, last: bool) -> Aad<&'b [u8]> {
        buf.clear();
        buf.extend_from_slice(&self.ad_prefix);
        buf.extend_from_slice(&index.to_be_bytes());
        buf.push(u8::from(last));
        Aad::from(&buf[..])
    }

    /// Seal `plain`, chunks `first, first + 1, ...` of the file (the last one final when
    /// `last`), into `out`: each chunk's ciphertext then its tag. Returns the chunks.
    pub fn seal(
        &self,
        first: u64,
        last: bool,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<usize, AeadError> {
        let chunks = self.plain_chunks(plain.len(), last)?;
        check_indexes(first, chunks)?;
        check_output(plain.len() + chunks * TAG_BYTES, plain, out)?;
        let jobs = self.jobs(first, last, chunks, plain, self.chunk_bytes, out, |n| {
            n + TAG_BYTES
        });
        run(jobs, |job, ad| self.seal_one(job, ad))?;
        Ok(chunks)
    }

    /// Open `body`, encrypted chunks `first, first + 1, ...` of the file (the last one
    /// final when `last`), into `out`. [`AeadError::Chunk`] names the first chunk that
    /// fails authentication; `out` is then all zeros.
    pub fn open(
        &self,
        first: u64,
        last: bool,
        body: &[u8],
        out: &mut [u8],
    ) -> Result<(), AeadError> {
        let chunks = self.sealed_chunks(body.len(), last)?;
        check_indexes(first, chunks)?;
        check_output(body.len() - chunks * TAG_BYTES, body, out)?;
        let step = self.chunk_bytes + TAG_BYTES;
        let jobs = self.jobs(first, last, chunks, body, step, out, |n| n - TAG_BYTES);
        let outcome = run(jobs, |job, ad| self.open_one(job, ad));
        if outcome.is_err() {
            out.fill(0);
        }
        outcome
    }

    /// The run cut into its chunks: input pieces of `step` bytes (the last: the rest),
    /// output pieces of `out_len(input piece)` bytes.
    #[allow(clippy::too_many_arguments)]
    fn jobs<'i, 'o>(
        &self,
        first: u64,
        last: bool,
        chunks: usize,
        input: &'i [u8],
        step: usize,
        out: &'o mut [u8],
        out_len: impl Fn(usize) -> usize,
    ) -> Vec<Job<'i, 'o>> {
        let mut jobs = Vec::with_capacity(chunks);
        let (mut input, mut out) = (input, out);
        for i in 0..chunks {
            let (piece, rest) = input.split_at(step.min(input.len()));
            let (output, out_rest) = std::mem::take(&mut out).split_at_mut(out_len(piece.len()));
            jobs.push(Job {
                index: first + i as u64,
                last: last && i + 1 == chunks,
                input: piece,
                output,
            });
            input = rest;
            out = out_rest;
        }
        jobs
    }

    fn seal_one(&self, job: &mut Job<'_, '_>, ad: &mut Vec<u8>) -> Result<(), AeadError> {
        let (text, tag) = job.output.split_at_mut(job.input.len());
        self.key
            .seal_out_of_place_scatter(
                self.nonce(job.index),
                self.aad(ad, job.index, job.last),
                job.input,
                text,
                &[],
                tag,
            )
            .map_err(|_| AeadError::TooLong)
    }

    fn open_one(&self, job: &mut Job<'_, '_>, ad: &mut Vec<u8>) -> Result<(), AeadError> {
        let (text, tag) = job.input.split_at(job.output.len());
        self.key
            .open_separate_gather(
                self.nonce(job.index),
                self.aad(ad, job.index, job.last),
                text,
                tag,
                job.output,
            )
            .map_err(|_| AeadError::Chunk(job.index))
    }
}

fn check_indexes(first: u64, chunks: usize) -> Result<(), AeadError> {
    match first.checked_add((chunks as u64).saturating_sub(1)) {
        Some(_) => Ok(()),
        None => Err(AeadError::Index { first, chunks }),
    }
}

fn check_output(expected: usize, input: &[u8], out: &[u8]) -> Result<(), AeadError> {
    if out.len() != expected {
        return Err(AeadError::Output {
            expected,
            got: out.len(),
        });
    }
    if overlaps(input.as_ptr_range(), out.as_ptr_range()) {
        return Err(AeadError::Overlap);
    }
    Ok(())
}

fn overlaps(a: Range<*const u8>, b: Range<*const u8>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Runs `one` over the jobs on up to [`threads_for`] threads, which take the chunks in
/// order one at a time (a thread the OS delays takes fewer); the error of the lowest
/// chunk index wins (what a serial run reports).
fn run<F>(jobs: Vec<Job<'_, '_>>, one: F) -> Result<(), AeadError>
where
    F: Fn(&mut Job<'_, '_>, &mut Vec<u8>) -> Result<(), AeadError> + Sync,
{
    let threads = threads_for(jobs.len());
    let jobs: Vec<Mutex<Job<'_, '_>>> = jobs.into_iter().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    // the lowest failing index so far: chunks after it are not opened
    let failed = AtomicU64::new(u64::MAX);
    let error: Mutex<Option<AeadError>> = Mutex::new(None);
    let work = || {
        let mut ad = Vec::new();
        while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            let mut job = job.lock();
            // chunks are handed out in order: every one before a failure is already taken
            if job.index > failed.load(Ordering::Relaxed) {
                break;
            }
            if let Err(err) = one(&mut job, &mut ad) {
                failed.fetch_min(job.index, Ordering::Relaxed);
                let mut slot = error.lock();
                if slot
                    .as_ref()
                    .is_none_or(|e| error_rank(&err) < error_rank(e))
                {
                    *slot = Some(err);
                }
            }
        }
    };
    if threads > 1 {
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            work();
            for helper in helpers {
                if helper.join().is_err() {
                    *error.lock() = Some(AeadError::Panicked);
                }
            }
        });
    } else {
        work();
    }
    match error.into_inner() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn error_rank(err: &AeadError) -> u64 {
    match err {
        AeadError::Chunk(index) => *index,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7u8; 32];
    const PREFIX: [u8; 8] = *b"noncepfx";
    const AD: &[u8] = b"PKCRYPT\x01header-and-item\x00";

    fn plain(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sealed(chunks: &Chunks, data: &[u8]) -> Vec<u8> {
        let n = chunks.plain_chunks(data.len(), true).unwrap();
        let mut out = vec![0u8; data.len() + n * TAG_BYTES];
        assert_eq!(chunks.seal(0, true, data, &mut out).unwrap(), n);
        out
    }

    #[test]
    fn each_chunk_is_standard_gcm_under_its_nonce_and_associated_data() {
        let chunks = Chunks::new(&KEY, &PREFIX, AD, 10).unwrap();
        let data = plain(25);
        let body = sealed(&chunks, &data);
        assert_eq!(body.len(), 25 + 3 * TAG_BYTES);
        // chunk 1 checked with AWS-LC directly: nonce prefix || 1, ad || 1 || not final
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&PREFIX);
        nonce[8..].copy_from_slice(&1u32.to_be_bytes());
        let mut ad = AD.to_vec();
        ad.extend_from_slice(&1u64.to_be_bytes());
        ad.push(0);
        let mut one = body[26..52].to_vec();
        let got = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&ad),
                &mut one,
            )
            .unwrap();
        assert_eq!(got, &data[10..20]);
    }

    #[test]
    fn round_trip_of_every_length_near_chunk_edges() {
        let chunks = Chunks::new(&KEY, &PREFIX, AD, 64).unwrap();
        for n in [0, 1, 63, 64, 65, 127, 128, 129, 64 * 9 + 5] {
            let data = plain(n);
            let body = sealed(&chunks, &data);
            let mut back = vec![1u8; n];
            chunks.open(0, true, &body, &mut back).unwrap();
            assert_eq!(back, data, "length {n}");
        }
    }

    #[test]
    fn runs_sealed_apart_equal_one_run() {
        let chunks = Chunks::new(&KEY, &PREFIX, AD, 16).unwrap();
        let data = plain(16 * 5 + 3);
        let whole = sealed(&chunks, &data);
        let step = 16 + TAG_BYTES;
        let mut head = vec![0u8; 2 * step];
        assert_eq!(chunks.seal(0, false, &data[..32], &mut head).unwrap(), 2);
        let mut tail = vec![0u8; whole.len() - 2 * step];
        assert_eq!(chunks.seal(2, true, &data[32..], &mut tail).unwrap(), 4);
        assert_eq!([head, tail].concat(), whole);
        // and a run in the middle opens alone
        let mut mid = vec![0u8; 16];
        chunks
            .open(3, false, &whole[3 * step..4 * step], &mut mid)
            .unwrap();
        assert_eq!(mid, &data[48..64]);
    }

    #[test]
    fn the_first_failing_chunk_is_named_and_the_output_zeroed() {
        let chunks = Chunks::new(&KEY, &PREFIX, AD, 8).unwrap();
        let data = plain(8 * 40);
        let body = sealed(&chunks, &data);
        let step = 8 + TAG_BYTES;
        for bad in [0usize, 1, 17, 39] {
            let mut tampered = body.clone();
            tampered[bad * step + 3] ^= 1;
            tampered[39 * step + 1] ^= 0x80; // a later chunk fails too
            let mut out = vec![0u8; data.len()];
            let err = chunks.open(0, true, &tampered, &mut out).unwrap_err();
            assert_eq!(err, AeadError::Chunk(bad as u64));
            assert!(out.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn truncation_reordering_and_another_item_fail() {
        let chunks = Chunks::new(&KEY, &PREFIX, AD, 8).unwrap();
        let data = plain(8 * 4 + 2);
        let body = sealed(&chunks, &data);
        let step = 8 + TAG_BYTES;
        // cut at a chunk boundary: the new last chunk was not sealed as final
        let mut out = vec![0u8; 8 * 3];
        assert_eq!(
            chunks.open(0, true, &body[..3 * step], &mut out),
            Err(AeadError::Chunk(2))
        );
        // two chunks swapped
        let mut out = vec![0u8; data.len()];
        assert_eq!(
            chunks.open(0, true, &body_swapped(&body, step), &mut out),
            Err(AeadError::Chunk(0))
        );
        // another item's associated data
        let other = Chunks::new(&KEY, &PREFIX, b"PKCRYPT\x01other\x00", 8).unwrap();
        assert_eq!(
            other.open(0, true, &body, &mut out),
            Err(AeadError::Chunk(0))
        );
        // too short for a final tag
        assert_eq!(
            chunks.open(0, true, &body[..step + 5], &mut [0u8; 8]),
            Err(AeadError::Truncated { len: step + 5 })
        );
    }

    fn body_swapped(body: &[u8], step: usize) -> Vec<u8> {
        let mut out = body.to_vec();
        out[..step].copy_from_slice(&body[step..2 * step]);
        out[step..2 * step].copy_from_slice(&body[..step]);
        out
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(
            Chunks::new(&[0u8; 24], &PREFIX, AD, 8).err(),
            Some(AeadError::Key(24))
        );
        assert_eq!(
            Chunks::new(&KEY, &[0u8; 7], AD, 8).err(),
            Some(AeadError::NoncePrefix(7))
        );
        assert_eq!(
            Chunks::new(&KEY, &PREFIX, AD, 0).err(),
            Some(AeadError::ChunkBytes(0))
        );
        assert_eq!(
            Chunks::new(&KEY, &PREFIX, AD, 1 << 36).err(),
            Some(AeadError::ChunkBytes(1 << 36))
        );
        let chunks = Chunks::new(&KEY, &PREFIX, AD, 8).unwrap();
        assert_eq!(
            chunks.seal(0, false, &[0u8; 9], &mut [0u8; 64]),
            Err(AeadError::NotWhole { len: 9, step: 8 })
        );
        assert_eq!(
            chunks.seal(0, true, &[0u8; 9], &mut [0u8; 40]),
            Err(AeadError::Output {
                expected: 41,
                got: 40
            })
        );
        assert_eq!(
            chunks.seal(u64::MAX, true, &[0u8; 9], &mut [0u8; 41]),
            Err(AeadError::Index {
                first: u64::MAX,
                chunks: 2
            })
        );
        assert!(chunks
            .seal(u64::MAX, true, &[0u8; 8], &mut [0u8; 24])
            .is_ok());
        let buf = [0u8; 64];
        assert!(overlaps(buf[..10].as_ptr_range(), buf[9..].as_ptr_range()));
        assert!(!overlaps(
            buf[..10].as_ptr_range(),
            buf[10..].as_ptr_range()
        ));
    }
}
