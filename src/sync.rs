//! Two small helpers every thread-owning module needs: a lock that survives a panicked holder
//! (state behind our mutexes stays valid between statements, so a poisoned lock is still usable),
//! and named threads with small stacks.

use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;

/// `mutex.locked()`: lock, taking the guard even if a previous holder panicked.
pub trait Locked<T> {
    /// The guard, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Start a thread named `name` with a stack of `stack` bytes.
pub fn spawn_named<F, R>(
    name: impl Into<String>,
    stack: usize,
    f: F,
) -> std::io::Result<JoinHandle<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f)
}
