//! Process plumbing shared by the long-running subcommands.

/// This machine's host name.
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Block SIGINT/SIGTERM in every thread (call before spawning any) and
/// return a waiter for them.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t we own; standard signal numbers.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Wait for one of the signals in `set` (blocked by [`block_signals`]).
pub fn wait_signal(set: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals; `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Watch a host's events on their own thread: with `who`, each recovery of
/// a dead host is reported as `"{who}recovered dead host slot …"`; the first
/// fencing calls `on_fenced` (once) and ends the watch.
pub fn watch_host_events(
    events: std::sync::mpsc::Receiver<vmfs::cluster::HostEvent>,
    who: Option<String>,
    on_fenced: impl FnOnce(String) + Send + 'static,
) {
    use vmfs::cluster::HostEvent;
    std::thread::spawn(move || {
        while let Ok(ev) = events.recv() {
            match ev {
                HostEvent::Fenced(why) => {
                    on_fenced(why);
                    return;
                }
                HostEvent::Recovered { slot, records } => {
                    if let Some(who) = &who {
                        println!(
                            "{who}recovered dead host slot {slot} ({records} journal records replayed)"
                        );
                    }
                }
            }
        }
    });
}

/// Why a serving command (`vmfs mount`, `vmfs up`) stops.
pub enum Stop {
    Signal(libc::c_int),
    Fenced(String),
    Unmounted,
}

/// Send on `tx` what stops a serving command: the first signal of `set`,
/// this host's fencing (from `host_events`; recoveries of dead hosts are
/// reported as `"{who}recovered …"`) and, given `unmounted`, its FUSE
/// mount going away from outside.
pub fn watch_stops(
    tx: &std::sync::mpsc::Sender<Stop>,
    set: libc::sigset_t,
    host_events: std::sync::mpsc::Receiver<vmfs::cluster::HostEvent>,
    who: &str,
    unmounted: Option<std::sync::mpsc::Receiver<()>>,
) {
    let t = tx.clone();
    std::thread::spawn(move || {
        let _ = t.send(Stop::Signal(wait_signal(&set)));
    });
    let t = tx.clone();
    watch_host_events(host_events, Some(who.into()), move |why| {
        let _ = t.send(Stop::Fenced(why));
    });
    if let Some(rx) = unmounted {
        let t = tx.clone();
        std::thread::spawn(move || {
            if rx.recv().is_ok() {
                let _ = t.send(Stop::Unmounted);
            }
        });
    }
}
