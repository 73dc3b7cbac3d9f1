import Foundation
import Synchronization

/// Runs blocking work (libpq calls, child programs such as initdb, pg_basebackup, pg_rewind)
/// on a thread of its own and waits for it without holding a thread of Swift's cooperative
/// pool. That pool has one thread per core — two on a small machine — so two blocking calls
/// made straight from async code stop every task of the process (a node manager's lease
/// check and heartbeats among them) until one returns.
///
/// Every call gets a thread at once, so a hung postgres never delays another call (a lease
/// check behind a stuck observation); the threads are kept for a while after their work
/// (`BlockingThreads`), so a manager's observation every heartbeat does not create one.
public func blocking<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
    let result: Result<T, E> = await withCheckedContinuation { continuation in
        BlockingThreads.shared.run { continuation.resume(returning: Result { () throws(E) -> T in try body() }) }
    }
    return try result.get()
}

/// The threads that run `blocking` work: an idle one takes the next job, a new one is started
/// when none is idle, and one that stays idle for `idleSeconds` ends. A thread per call, as
/// before, without creating and ending one per call: that was a `clone` and an `exit`, a new
/// stack and its page faults, several times a second in an idle manager.
final class BlockingThreads: Sendable {
    static let shared = BlockingThreads()
    static let idleSeconds = 10

    /// One thread's hand-over slot: whoever takes the worker from the idle list puts a job in
    /// it and signals; the worker alone clears it.
    private final class Worker: @unchecked Sendable {
        var job: (@Sendable () -> Void)?
        let wakeup = DispatchSemaphore(value: 0)
    }

    private let idle = Mutex<[Worker]>([])

    func run(_ job: @escaping @Sendable () -> Void) {
        if let worker = idle.withLock({ $0.popLast() }) {
            worker.job = job
            worker.wakeup.signal()
            return
        }
        let worker = Worker()
        worker.job = job
        Thread.detachNewThread { [self] in serve(worker) }
    }

    private func serve(_ worker: Worker) {
        while true {
            worker.job?()
            worker.job = nil
            idle.withLock { $0.append(worker) }
            if worker.wakeup.wait(timeout: .now() + .seconds(Self.idleSeconds)) == .success { continue }
            // Timed out: leave, unless a caller took this worker in the meantime (its job and
            // signal are on the way).
            let left = idle.withLock { workers -> Bool in
                guard let index = workers.firstIndex(where: { $0 === worker }) else { return false }
                workers.remove(at: index)
                return true
            }
            if left { break }
            worker.wakeup.wait()
        }
    }
}
