import NIOCore
import Synchronization

/// Runs tasks on one event loop: a node manager's on the loop its witness connections use.
///
/// On Swift's global executor, every step of the manager's loops crossed threads: an answer
/// read on the event loop resumed its task on a pool thread, a `Task.sleep` fired on
/// libdispatch's timer thread and resumed on a pool thread. An idle manager woke threads
/// about 130 times a second, mostly to hand work over. With this executor as the manager's
/// task executor preference, an answer resumes its task on the thread that read it, and the
/// manager's timers (`sleep(for:)`, `WakeSignal`) are the loop's own.
///
/// Blocking work still runs on threads of its own (`blocking`); what runs here must not
/// block, as on any event loop.
public final class LoopExecutor: TaskExecutor, @unchecked Sendable {
    public let loop: any EventLoop

    public init(loop: any EventLoop) {
        self.loop = loop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }

    /// Sleeps on the loop's timer (no other thread is woken), or until the task is cancelled.
    public func sleep(for duration: Duration) async {
        guard duration > .zero, !Task.isCancelled else { return }
        let sleeper = Sleeper()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                sleeper.start(continuation, on: loop, after: TimeAmount(duration))
            }
        } onCancel: {
            sleeper.finish()
        }
    }

    /// One sleep: resumed once, by its timer or by cancellation, whichever comes first.
    private final class Sleeper: Sendable {
        private struct State: @unchecked Sendable {
            var continuation: CheckedContinuation<Void, Never>?
            var scheduled: Scheduled<Void>?
            var finished = false
        }

        private let state = Mutex(State())

        func start(_ continuation: CheckedContinuation<Void, Never>, on loop: any EventLoop, after delay: TimeAmount) {
            let cancelledAlready = state.withLock { state -> Bool in
                if state.finished { return true }
                state.continuation = continuation
                return false
            }
            if cancelledAlready { return continuation.resume() }
            let scheduled = loop.scheduleTask(in: delay) { [self] in finish() }
            let finishedMeanwhile = state.withLock { state -> Bool in
                state.scheduled = scheduled
                return state.finished
            }
            if finishedMeanwhile { scheduled.cancel() }
        }

        func finish() {
            let (continuation, scheduled) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Scheduled<Void>?) in
                state.finished = true
                defer {
                    state.continuation = nil
                    state.scheduled = nil
                }
                return (state.continuation, state.scheduled)
            }
            scheduled?.cancel()
            continuation?.resume()
        }
    }
}
