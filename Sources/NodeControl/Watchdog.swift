import Foundation
import Synchronization

/// A fence that does not depend on the manager's threads (DESIGN §5 rule 1): a small child
/// process, fed over a pipe, that SIGKILLs postgres when the manager stops renewing its lease
/// in time — a manager stopped (SIGSTOP), deadlocked or starved fences nothing itself.
///
/// The manager arms it with the postmaster's pid and the time left on the lease, again and
/// again; it disarms it when postgres cannot take writes (stopped, or a standby). When a
/// deadline passes unrenewed, or the pipe closes (the manager died) while armed, the watchdog
/// kills the postmaster and every process it started, then waits to be armed again.
public final class Watchdog: Sendable {
    private struct State {
        var process: ChildProcess?
        var writeEnd: Int32 = -1
        var armedPID: pid_t?
    }

    private let command: (String, [String])
    private let state = Mutex(State())

    /// `executable arguments…` runs `Watchdog.serve` on its standard input (`pgquorum
    /// watchdog`). The process starts with the first `arm`.
    public init(executable: String, arguments: [String]) {
        command = (executable, arguments)
        // A watchdog that died must not kill us with SIGPIPE on the next write: the write
        // fails, and the next one starts a new watchdog.
        signal(SIGPIPE, SIG_IGN)
    }

    /// Postgres (`pid`) may take writes for `remaining` more: kill it then unless renewed.
    public func arm(postmaster pid: pid_t, remaining: Duration) throws(ProcessError) {
        let millis = max(0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
        try send("arm \(pid) \(millis)\n", armed: pid)
    }

    /// Postgres cannot take writes: nothing to kill.
    public func disarm() throws(ProcessError) {
        guard state.withLock({ $0.armedPID != nil }) else { return }
        try send("disarm\n", armed: nil)
    }

    /// The watchdog's pid, while it runs.
    public var pid: pid_t? { state.withLock { $0.process?.isRunning == true ? $0.process?.pid : nil } }

    /// Disarms and ends the watchdog (a clean stop of the manager).
    public func close() async {
        try? disarm()
        let process = state.withLock { state in
            defer {
                if state.writeEnd >= 0 { Glibc.close(state.writeEnd) }
                state.writeEnd = -1
                state.process = nil
            }
            return state.process
        }
        _ = await process?.stop(signal: SIGTERM, grace: .seconds(2))
    }

    /// Bytes written to the watchdog that it has not read yet (0 once it serves them all).
    func unreadBytes() -> Int32 {
        state.withLock { state in
            var count: Int32 = 0
            guard state.writeEnd >= 0, ioctl(state.writeEnd, UInt(FIONREAD), &count) == 0 else { return -1 }
            return count
        }
    }

    /// Closes the pipe without disarming, as the death of the manager does.
    func abandon() {
        state.withLock { state in
            if state.writeEnd >= 0 { Glibc.close(state.writeEnd) }
            state.writeEnd = -1
        }
    }

    private func send(_ line: String, armed: pid_t?) throws(ProcessError) {
        try state.withLock { (state: inout State) throws(ProcessError) in
            if state.process?.isRunning != true || state.writeEnd < 0 {
                if state.writeEnd >= 0 { Glibc.close(state.writeEnd) }
                var fds: [Int32] = [-1, -1]
                guard pipe(&fds) == 0 else {
                    throw .spawnFailed(command: command.0, message: "pipe: \(String(cString: strerror(errno)))")
                }
                _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
                _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
                defer { Glibc.close(fds[0]) }
                state.process = try ChildProcess.spawn(command.0, command.1, input: .descriptor(fds[0]), output: .inherited)
                state.writeEnd = fds[1]
            }
            let written = line.utf8CString.withUnsafeBufferPointer { write(state.writeEnd, $0.baseAddress, $0.count - 1) }
            guard written == line.utf8.count else {
                let reason = String(cString: strerror(errno))
                Glibc.close(state.writeEnd)
                state.writeEnd = -1
                throw .spawnFailed(command: command.0, message: "the watchdog does not read its commands: \(reason)")
            }
            state.armedPID = armed
        }
    }

    // MARK: The watchdog process

    /// What the watchdog process does with one command line; `deadline` in milliseconds of
    /// `now`'s clock. Returns the new target and deadline, or nil for a line it cannot read.
    static func apply(_ line: Substring, now: UInt64) -> (pid: pid_t, deadline: UInt64)?? {
        let words = line.split(separator: " ")
        switch words.first {
        case "arm" where words.count == 3:
            guard let pid = pid_t(words[1]), pid > 1, let millis = UInt64(words[2]) else { return nil }
            return .some((pid, now + millis))
        case "disarm" where words.count == 1:
            return .some(nil)
        default:
            return nil
        }
    }

    /// Runs the watchdog on `input` until it closes; never returns. Logs to standard error.
    public static func serve(input: Int32 = 0) -> Never {
        var target: (pid: pid_t, deadline: UInt64)?
        var pending = [UInt8]()
        func log(_ message: String) {
            FileHandle.standardError.write(Data("pgquorum watchdog: \(message)\n".utf8))
        }
        while true {
            let now = monotonicMillis()
            if let armed = target, now >= armed.deadline {
                log("the manager did not renew the lease of postgres \(armed.pid) in time: killing it")
                fence(armed.pid)
                target = nil
                continue
            }
            var descriptor = pollfd(fd: input, events: Int16(POLLIN), revents: 0)
            let timeout = target.map { Int32(clamping: $0.deadline - now) } ?? -1
            let ready = poll(&descriptor, 1, timeout)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = read(input, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                if let armed = target {
                    log("the manager is gone while postgres \(armed.pid) may take writes: killing it")
                    fence(armed.pid)
                }
                exit(0)
            }
            pending += buffer[0..<count]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                guard let update = apply(Substring(line), now: monotonicMillis()) else {
                    log("ignoring an unreadable command: \(line)")
                    continue
                }
                target = update
            }
        }
    }

    /// SIGKILL to the postmaster, then to every process it started (each backend leads a
    /// session of its own, so no process group reaches them all): no backend answers a client
    /// after the fence.
    public static func fence(_ postmaster: pid_t) {
        let children = childProcesses(of: postmaster)
        kill(postmaster, SIGKILL)
        for child in children { kill(child, SIGKILL) }
    }

    /// The pids whose parent is `parent`, from /proc.
    static func childProcesses(of parent: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { name -> pid_t? in
            guard let pid = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8) else { return nil }
            // "pid (comm) state ppid …": the command may hold spaces and parentheses.
            guard let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, let ppid = pid_t(fields[1]), ppid == parent else { return nil }
            return pid
        }
    }

    static func monotonicMillis() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1000 + UInt64(time.tv_nsec) / 1_000_000
    }
}
