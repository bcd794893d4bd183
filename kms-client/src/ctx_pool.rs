//! Keyed OpenSSL cipher contexts kept for reuse by whichever thread asks next: the key schedule
//! is computed once per context instead of once per call, and a caller only resets what changes
//! per call (IV or nonce). kmsfs seals file blocks and blockcrypt encrypts disk sectors through
//! these. OpenSSL cleanses a context's key schedule when the context is freed.

use openssl::cipher::CipherRef;
use openssl::cipher_ctx::CipherCtx;
use parking_lot::Mutex;
use zeroize::Zeroizing;

/// Idle contexts kept per direction; more concurrent callers than this key a fresh one.
const KEEP: usize = 16;

pub struct ContextPool {
    cipher: &'static CipherRef,
    key: Zeroizing<Vec<u8>>,
    padding: bool,
    /// Idle contexts keyed for decrypting ([0]) and encrypting ([1]).
    idle: [Mutex<Vec<CipherCtx>>; 2],
}

impl ContextPool {
    /// `key` must have the length `cipher` wants (checked when the first context is keyed).
    pub fn new(cipher: &'static CipherRef, key: &[u8], padding: bool) -> ContextPool {
        ContextPool {
            cipher,
            key: Zeroizing::new(key.to_vec()),
            padding,
            idle: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
        }
    }

    /// Runs `f` with a context keyed for encrypting (`encrypt`) or decrypting; `f` sets the IV.
    pub fn with<R>(&self, encrypt: bool, f: impl FnOnce(&mut CipherCtx) -> R) -> R {
        let idle = &self.idle[encrypt as usize];
        let popped = idle.lock().pop();
        let mut ctx = popped.unwrap_or_else(|| self.keyed(encrypt));
        let r = f(&mut ctx);
        let mut pool = idle.lock();
        if pool.len() < KEEP {
            pool.push(ctx);
        }
        r
    }

    fn keyed(&self, encrypt: bool) -> CipherCtx {
        let mut ctx = CipherCtx::new().expect("OpenSSL context");
        if encrypt {
            ctx.encrypt_init(Some(self.cipher), Some(&self.key), None).expect("key length fits the cipher");
        } else {
            ctx.decrypt_init(Some(self.cipher), Some(&self.key), None).expect("key length fits the cipher");
        }
        ctx.set_padding(self.padding);
        ctx
    }
}
