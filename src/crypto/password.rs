//! Argon2id hashing on its own small pool of low-priority threads.
//!
//! Argon2 is deliberately slow (tens of milliseconds of CPU and ~19 MiB per call). Run on
//! the async executor it would stall every request of that worker; run on an unbounded
//! pool, a login flood would take every core. So `workers` dedicated threads hash, jobs
//! wait in a bounded queue (503 beyond it), and the threads run at a lower CPU priority
//! (nice 10): they still use every idle cycle, but JWKS, refresh and token checks preempt
//! them, so a login flood cannot starve the cheap endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::cell::RefCell;

use argon2::password_hash::PasswordHasher as _;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Instant;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl PasswordCost {
    /// OWASP's recommended floor for Argon2id (m=19 MiB, t=2, p=1).
    pub const PRODUCTION: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// Cheap parameters that keep the test suite fast. No environment variable or config
    /// key maps to this: only code that builds `Settings` by hand can choose it.
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the hashing pool is shut down")]
    PoolClosed,
    /// More logins wait than the pool could serve in a reasonable time.
    #[error("the hashing queue is full")]
    Busy,
    /// The job waited in the queue past its deadline and was not run: what admitted it
    /// (a lockout lease) may no longer cover it.
    #[error("the password check waited too long for a hashing thread")]
    TooLate,
}

/// Jobs waiting per worker before new ones are refused (about 6 s of work at 25 ms each).
const QUEUE_PER_WORKER: usize = 256;
/// The nice value of hashing threads (0 is normal; higher yields to others).
const HASH_THREAD_NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct PasswordHasher(Arc<Inner>);

struct Inner {
    argon2: Argon2<'static>,
    params: Params,
    jobs: Mutex<mpsc::Sender<Job>>,
    max_waiting: usize,
    waiting: AtomicUsize,
    running: AtomicUsize,
    /// A real hash of a random password: verified when the email is unknown, so that
    /// path does the same work as a wrong password and timing reveals nothing.
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(cost: PasswordCost, workers: usize) -> Result<Self, HashError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| HashError::Hashing(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy_password = super::b64url(&super::random_bytes::<16>());
        let dummy_hash = argon2
            .hash_password(dummy_password.as_bytes())
            .map_err(|e| HashError::Hashing(e.to_string()))?
            .to_string();
        let workers = workers.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&receiver))
                .map_err(|e| HashError::Hashing(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self(Arc::new(Inner {
            argon2,
            params,
            jobs: Mutex::new(sender),
            max_waiting: workers * QUEUE_PER_WORKER,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            dummy_hash,
        })))
    }

    /// A PHC string (`$argon2id$v=19$m=…`) for a new password.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(None, move |inner| {
            hash_phc(&inner.argon2, &inner.params, password.as_bytes())
        })
        .await?
    }

    /// Whether `password` matches `phc`; with `None` (no such user) it verifies against
    /// the dummy hash and answers `false`, after the same amount of work.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        self.verify_by(password, phc, None).await
    }

    /// `verify`, refused with `TooLate` unless a hashing thread takes it up before
    /// `start_by`: a login's lockout lease covers its check only for so long, and a
    /// check run after the lease expired would be one the limit never counted.
    pub async fn verify_by(
        &self,
        password: String,
        phc: Option<String>,
        start_by: Option<Instant>,
    ) -> Result<bool, HashError> {
        self.run(start_by, move |inner| {
            let known = phc.is_some();
            let phc = phc.as_deref().unwrap_or(&inner.dummy_hash);
            let matches = verify_phc(password.as_bytes(), phc);
            known && matches
        })
        .await
    }

    /// How many hashes wait for a free worker (a metric of login pressure).
    pub fn queue_depth(&self) -> usize {
        self.0.waiting.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.0.running.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        start_by: Option<Instant>,
        job: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let inner = Arc::clone(&self.0);
        if inner.waiting.fetch_add(1, Ordering::Relaxed) >= inner.max_waiting {
            inner.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(HashError::Busy);
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let task: Job = Box::new(move || {
            inner.waiting.fetch_sub(1, Ordering::Relaxed);
            if start_by.is_some_and(|by| Instant::now() > by) {
                let _ = done.send(Err(HashError::TooLate));
                return;
            }
            inner.running.fetch_add(1, Ordering::Relaxed);
            let out = job(&inner);
            inner.running.fetch_sub(1, Ordering::Relaxed);
            let _ = done.send(Ok(out));
        });
        let sent = self
            .0
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(task);
        if sent.is_err() {
            self.0.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(HashError::PoolClosed);
        }
        result.await.map_err(|_| HashError::PoolClosed)?
    }
}

const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

thread_local! {
    /// This hashing thread's Argon2 memory (19 MiB at the production cost), reused by
    /// every hash it runs. Allocating it per hash made glibc keep the freed blocks in
    /// its arenas (it raises its mmap threshold after the first free), so resident
    /// memory wandered by hundreds of MiB under login load; one block per thread keeps
    /// it at one block per thread. Like the allocator's freed memory before, it is not
    /// wiped between hashes: the next hash overwrites it.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        f(&mut memory[..blocks])
    })
}

fn hash_phc(argon2: &Argon2<'_>, params: &Params, password: &[u8]) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Hashing(e.to_string());
    let salt = super::random_bytes::<SALT_LEN>();
    let mut out = [0u8; OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(password, &salt, &mut out, memory)
    })
    .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Recomputes the hash with the parameters, salt and length stored in `phc` (so hashes
/// made with older settings keep verifying) and compares in constant time.
fn verify_phc(password: &[u8], phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let computed = with_memory(blocks, |memory| {
        argon2.hash_password_into_with_memory(password, salt.as_ref(), &mut out, memory)
    });
    computed.is_ok() && super::constant_time_eq(&out, expected.as_bytes())
}

/// A hashing thread: lowers its own priority, then runs jobs until the hasher is dropped.
fn worker(jobs: &Mutex<mpsc::Receiver<Job>>) {
    // On Linux the nice value is per thread; `who = 0` means the calling thread. Failing
    // to lower it only costs latency under load, so the result is not fatal.
    // SAFETY: setpriority has no memory-safety preconditions.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASH_THREAD_NICE) };
    loop {
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(PasswordCost::INSECURE_FOR_TESTS, 2).expect("hasher")
    }

    /// A check that a busy pool takes up after its deadline is refused unrun, and one
    /// taken up in time runs; the queue is held deterministically by a job that waits.
    #[tokio::test]
    async fn a_verify_taken_up_after_its_deadline_is_refused_unrun() {
        let h = PasswordHasher::new(PasswordCost::INSECURE_FOR_TESTS, 1).expect("hasher");
        let phc = h.hash("Correct-Horse-9".into()).await.expect("hash");
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let h = h.clone();
            tokio::spawn(async move { h.run(None, move |_| hold.recv().is_ok()).await })
        };
        while h.in_flight() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        let late = {
            let h = h.clone();
            let phc = phc.clone();
            tokio::spawn(async move {
                h.verify_by("Correct-Horse-9".into(), Some(phc), Some(soon))
                    .await
            })
        };
        let roomy = Instant::now() + std::time::Duration::from_secs(600);
        let in_time = {
            let h = h.clone();
            let phc = phc.clone();
            tokio::spawn(async move {
                h.verify_by("Correct-Horse-9".into(), Some(phc), Some(roomy))
                    .await
            })
        };
        while h.queue_depth() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        release.send(()).expect("release the blocker");
        assert!(blocker.await.expect("join").expect("blocker ran"));
        assert!(matches!(late.await.expect("join"), Err(HashError::TooLate)));
        assert!(in_time.await.expect("join").expect("verified in time"));
        assert_eq!((h.queue_depth(), h.in_flight()), (0, 0));
    }

    #[tokio::test]
    async fn hashes_verify_and_reject() {
        let h = hasher();
        let phc = h.hash("Correct-Horse-9".into()).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$"));
        assert!(
            h.verify("Correct-Horse-9".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!h.verify("Correct-Horse-8".into(), Some(phc)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let h = hasher();
        assert!(!h.verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn production_cost_is_owasp_floor() {
        let h = PasswordHasher::new(PasswordCost::PRODUCTION, 1).expect("hasher");
        let phc = h.hash("Correct-Horse-9".into()).await.expect("hash");
        assert!(phc.contains("m=19456,t=2,p=1"), "{phc}");
    }

    #[tokio::test]
    async fn hashes_match_the_argon2_crates_own_format_both_ways() {
        use argon2::password_hash::PasswordVerifier as _;
        // Stored hashes come from before the reusable memory and from other tools; ours
        // must verify elsewhere too. Different costs share the thread's memory.
        let h = hasher();
        for cost in [PasswordCost::INSECURE_FOR_TESTS, PasswordCost::PRODUCTION] {
            let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
                .expect("params");
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"Correct-Horse-9")
                .expect("hash")
                .to_string();
            assert!(
                h.verify("Correct-Horse-9".into(), Some(theirs.clone()))
                    .await
                    .unwrap()
            );
            assert!(
                !h.verify("Correct-Horse-8".into(), Some(theirs))
                    .await
                    .unwrap()
            );
        }
        let ours = h.hash("Correct-Horse-9".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"Correct-Horse-9", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"Correct-Horse-8", &parsed)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_tampered_hash_does_not_verify() {
        let h = hasher();
        let phc = h.hash("Correct-Horse-9".into()).await.expect("hash");
        let (head, tail) = phc.rsplit_once('$').expect("phc");
        let mut bytes = tail.as_bytes().to_vec();
        bytes[0] = if bytes[0] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}${}", String::from_utf8(bytes).unwrap());
        assert!(
            !h.verify("Correct-Horse-9".into(), Some(tampered))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn corrupt_hash_is_a_mismatch_not_a_panic() {
        let h = hasher();
        assert!(
            !h.verify("x".into(), Some("not-a-phc".into()))
                .await
                .unwrap()
        );
    }
}
