//! What the operations port reads of delivery: the queue (waiting ids, and whether it is full)
//! and the circuit (whether sending is paused), through [`crate::ops::server::WorkGauges`].
//!
//! Invariant: reading only — nothing here changes the queue or the circuit.

use crate::delivery::circuit::Circuit;
use crate::delivery::queue::WorkQueue;
use crate::ops::liveness::QueueState;
use crate::ops::server::WorkGauges;

/// The queue and the circuit, as the endpoints see them.
pub struct DeliveryGauges {
    /// The queue from Realtime and the sweep to the sender threads.
    pub queue: WorkQueue,
    /// The pause gate of sending.
    pub circuit: Circuit,
}

impl WorkGauges for DeliveryGauges {
    fn queue(&self) -> QueueState {
        QueueState {
            waiting: self.queue.len(),
            full: self.queue.is_full(),
        }
    }

    fn circuit_open(&self) -> bool {
        self.circuit.is_open()
    }
}
