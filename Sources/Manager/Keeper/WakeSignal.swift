import NIOCore
import Synchronization

/// Wakes the tasks that wait on it, or each after its timeout: a loop that runs at least every
/// so often, and at once when there is news (new entries of the log).
///
/// Timeouts are timers of the manager's event loop (`LoopExecutor`), and a wait that a signal
/// ends cancels its timer: the control loop waits several times a second, and a timer left to
/// fire for nothing after each was as many wakeups again.
final class WakeSignal: Sendable {
    private struct Waiter: @unchecked Sendable {
        var continuation: CheckedContinuation<Void, Never>
        var timer: Scheduled<Void>?
    }

    private struct State {
        /// A signal came while nobody waited: the next wait returns at once.
        var pending = false
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())
    private let loop: any EventLoop

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Wakes every task waiting now, or else the next one to wait.
    func signal() {
        let waiters = state.withLock { state -> [Waiter] in
            guard !state.waiters.isEmpty else {
                state.pending = true
                return []
            }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume()
        }
    }

    /// Returns at the next signal (at once if one came since the last wait), or after `timeout`.
    func wait(timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let id = state.withLock { state -> UInt64? in
                if state.pending {
                    state.pending = false
                    return nil
                }
                state.nextWaiter &+= 1
                state.waiters[state.nextWaiter] = Waiter(continuation: continuation)
                return state.nextWaiter
            }
            guard let id else { return continuation.resume() }
            let timer = loop.scheduleTask(in: TimeAmount(timeout)) { [self] () -> Void in
                state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
            }
            // Kept for a signal to cancel, unless one came already (then the timer finds
            // nothing when it fires).
            let signalled = state.withLock { state -> Bool in
                guard state.waiters[id] != nil else { return true }
                state.waiters[id]?.timer = timer
                return false
            }
            if signalled { timer.cancel() }
        }
    }
}
