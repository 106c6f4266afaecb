//! Admission of API generations: at most `running` at once (the coordinator's max_sessions);
//! beyond that, up to `waiting` requests wait their turn and the rest are refused at once with
//! 429. A request that gives up while waiting (client gone) leaves the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The shared admission state.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    running: usize,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// Decrements the waiting count however the wait ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// `running` generations at once (at least one), `max_waiting` in the queue.
    pub fn new(running: usize, max_waiting: usize) -> Self {
        let running = running.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(running)),
            running,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    /// Waits for a generation slot, or refuses when the queue is full. Hold the permit for as
    /// long as the generation runs.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _guard = Waiting(self.waiting.clone());
        if before >= self.max_waiting {
            return Err(ApiError::QueueFull {
                running: self.running,
                waiting: before,
            });
        }
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Generation("the server is shutting down".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_refuses_and_a_freed_slot_admits_the_next() {
        let a = Admission::new(1, 1);
        let first = a.enter().await.unwrap();
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.enter().await.map(|_| ()) });
        while a.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(a.enter().await, Err(ApiError::QueueFull { .. })));
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(a.waiting.load(Ordering::SeqCst), 0);
        assert!(a.enter().await.is_ok());
    }
}
