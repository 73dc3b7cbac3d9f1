import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The one thread every child process is started from; it lives as long as the process.
///
/// Linux sends a parent-death signal (`PR_SET_PDEATHSIG`, `setpriv --pdeathsig`) when the
/// *thread* that created the child exits, not when the process does (prctl(2)). Swift's
/// concurrency pool and libdispatch end worker threads that stay idle for a few seconds, and
/// a test's or a command's own thread ends with its work; a postmaster started from either
/// would be killed at some later, unrelated moment. Started from here, it is killed only
/// when this process ends.
final class SpawnThread: Sendable {
    static let shared = SpawnThread()

    /// Work handed to the thread, with the semaphore its caller waits on.
    private final class Job: @unchecked Sendable {
        /// Dropped before `done` is posted: it may wrap a closure of the caller's that must not
        /// outlive the call.
        private var work: (() -> Void)?
        let done: UnsafeMutablePointer<sem_t>

        init(_ work: @escaping () -> Void) {
            self.work = work
            done = .allocate(capacity: 1)
            sem_init(done, 0, 0)
        }

        /// Runs the work on the spawn thread, then releases its caller.
        func perform() {
            work?()
            work = nil
            sem_post(done)
        }

        deinit {
            sem_destroy(done)
            done.deallocate()
        }
    }

    private let jobs = Mutex<[Job]>([])
    /// Posted once per queued job; the thread sleeps on it.
    nonisolated(unsafe) private let wakeup: UnsafeMutablePointer<sem_t>

    private init() {
        wakeup = .allocate(capacity: 1)
        sem_init(wakeup, 0, 0)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let code = pthread_create(
            &thread, nil,
            { context in
                Unmanaged<SpawnThread>.fromOpaque(context!).takeUnretainedValue().serve()
                return nil
            }, context)
        precondition(code == 0, "cannot create the thread that starts child processes: \(String(cString: strerror(code)))")
        pthread_detach(thread)
    }

    private func serve() {
        while true {
            while sem_wait(wakeup) != 0 {}  // EINTR only
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            job.perform()
        }
    }

    /// Runs `body` on the spawn thread and returns what it returned; the caller blocks
    /// meanwhile, so `body` should be short (a `posix_spawn`).
    func run<T>(_ body: () throws(ProcessError) -> T) throws(ProcessError) -> T {
        var result: Result<T, ProcessError>?
        withoutActuallyEscaping(body) { body in
            let job = Job { result = Result { () throws(ProcessError) -> T in try body() } }
            jobs.withLock { $0.append(job) }
            sem_post(wakeup)
            while sem_wait(job.done) != 0 {}  // EINTR only
        }
        return try result!.get()
    }
}
