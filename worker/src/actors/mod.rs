//! The actor side of the worker: an actix system with one arbiter (thread)
//! per core. Each run is a [`run::RunActor`] on one arbiter; each node
//! execution is a [`node::NodeActor`] supervised by its run, under the policy
//! [`supervisor`] declares.

pub mod node;
pub mod run;
pub mod supervisor;

use actix::prelude::*;

/// The actix system and its arbiters, running on threads of their own beside
/// the tokio runtime. Each arbiter takes assignments on its own NATS
/// connection (see `crate::run_with`).
pub struct ActorRuntime {
    system: actix_rt::System,
    arbiters: Vec<ArbiterHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ActorRuntime {
    /// Starts `n` arbiters (at least one).
    pub fn start(n: usize) -> std::io::Result<ActorRuntime> {
        let n = n.max(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("weft-actors".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                sys.block_on(async move {
                    let arbiters: Vec<ArbiterHandle> =
                        (0..n).map(|_| Arbiter::new().handle()).collect();
                    let _ = tx.send((actix_rt::System::current(), arbiters));
                });
                let _ = sys.run();
            })?;
        let (system, arbiters) = rx
            .recv()
            .map_err(|_| std::io::Error::other("actor system failed to start"))?;
        Ok(ActorRuntime {
            system,
            arbiters,
            thread: Some(thread),
        })
    }

    /// Every arbiter.
    pub fn arbiters(&self) -> &[ArbiterHandle] {
        &self.arbiters
    }

    /// Stops every arbiter and waits for the system thread.
    pub fn stop(mut self) {
        for a in &self.arbiters {
            a.stop();
        }
        self.system.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
