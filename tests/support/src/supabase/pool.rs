//! A small PostgreSQL connection pool like PostgREST's: idle connections are reused (after a
//! cheap validity check, so REST recovers as soon as a restarted database is back), new ones
//! are opened on demand up to [`Pool::MAX`], and every session runs in UTC with the service
//! role's statement timeout.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Idle connections to reuse; grown on demand up to [`Pool::MAX`], like PostgREST's pool.
pub(crate) struct Pool {
    conn_str: String,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<postgres::Client>,
    open: usize,
}

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// PostgreSQL refused or is down.
    Connect(String),
    /// Every connection is busy and none came back in time.
    Timeout,
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Connect(e) => write!(f, "{e}"),
            PoolError::Timeout => write!(f, "timed out waiting for a pooled connection"),
        }
    }
}

impl Pool {
    const MAX: usize = 16;
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

    pub(crate) fn new(conn_str: &str) -> Pool {
        Pool {
            conn_str: format!("{conn_str} connect_timeout=2"),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// A connection (reused or new). Dropping the guard returns it unless it is closed.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, PoolError> {
        let deadline = Instant::now() + Self::ACQUIRE_TIMEOUT;
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(mut c) = st.idle.pop() {
                drop(st);
                // A pooled session may have died with a PostgreSQL restart without the client
                // noticing yet; a cheap round trip finds out before the request depends on it,
                // so REST recovers as soon as the database is back.
                if !c.is_closed() && c.is_valid(Duration::from_secs(2)).is_ok() {
                    return Ok(Pooled {
                        pool: self,
                        client: Some(c),
                    });
                }
                drop(c);
                st = self.state.lock().unwrap();
                st.open -= 1;
                continue;
            }
            if st.open < Self::MAX {
                st.open += 1;
                drop(st);
                return match self.connect() {
                    Ok(c) => Ok(Pooled {
                        pool: self,
                        client: Some(c),
                    }),
                    Err(e) => {
                        self.state.lock().unwrap().open -= 1;
                        self.freed.notify_one();
                        Err(PoolError::Connect(e.to_string()))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PoolError::Timeout);
            }
            st = self.freed.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        let mut c = postgres::Client::connect(&self.conn_str, postgres::NoTls)?;
        // Supabase sessions run in UTC; the service role inherits an 8 s statement timeout (§9.1).
        c.batch_execute("SET TimeZone TO 'UTC'; SET statement_timeout TO '8s'")?;
        Ok(c)
    }
}

/// A checked-out connection.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<postgres::Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.client.as_ref().expect("client present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.client.as_mut().expect("client present until drop")
    }
}

impl Pooled<'_> {
    /// Drop this connection instead of returning it (it failed in a way that makes it suspect).
    pub(crate) fn discard(mut self) {
        self.client = None;
        self.pool.state.lock().unwrap().open -= 1;
        self.pool.freed.notify_one();
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let mut st = self.pool.state.lock().unwrap();
            if c.is_closed() {
                st.open -= 1;
            } else {
                st.idle.push(c);
            }
            drop(st);
            self.pool.freed.notify_one();
        }
    }
}
