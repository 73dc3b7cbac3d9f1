import CSpawn
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum Termination: Sendable, Equatable, CustomStringConvertible {
    case exited(code: Int32)
    case signaled(signal: Int32)

    public var description: String {
        switch self {
        case .exited(let code): return "exited with code \(code)"
        case .signaled(let signal): return "killed by signal \(signal)"
        }
    }
}

/// An error starting or waiting for a child process.
public enum ProcessError: Error, Equatable, CustomStringConvertible {
    case spawnFailed(command: String, message: String)
    case failed(command: String, termination: Termination, outputTail: String)
    case timedOut(command: String, seconds: Double, outputTail: String)

    public var description: String {
        switch self {
        case .spawnFailed(let command, let message):
            return "could not start \(command): \(message)"
        case .failed(let command, let termination, let tail):
            return "\(command) \(termination)" + (tail.isEmpty ? "" : ": \(tail)")
        case .timedOut(let command, let seconds, let tail):
            return "\(command) did not finish within \(seconds) s and was killed" + (tail.isEmpty ? "" : ": \(tail)")
        }
    }
}

/// Where a child's standard input comes from.
public enum ChildInput: Sendable {
    /// /dev/null.
    case null
    /// A descriptor of ours (the read end of a pipe), duplicated onto the child's input.
    case descriptor(Int32)
}

/// Where a child's standard output and error go.
public enum ChildOutput: Sendable {
    /// Appended to a file (created with mode 0640 when missing).
    case file(path: String)
    /// Discarded.
    case null
    /// Where ours go.
    case inherited
}

/// A child process started with `posix_spawn`, waited for by pid only (never `waitpid(-1)`),
/// so it coexists with other code that reaps its own children.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let command: String
    /// Set once the process has been reaped; after that its pid may belong to another process.
    private let termination = Mutex<Termination?>(nil)

    private init(pid: pid_t, command: String) {
        self.pid = pid
        self.command = command
    }

    /// Starts `executable` with `arguments`, its input from `input` (/dev/null by default).
    ///
    /// With `parentDeathSignal` (a name such as `TERM` or `KILL`), the child receives that
    /// signal when this process ends, however it ends — SIGKILL included (`setpriv
    /// --pdeathsig`, Linux `PR_SET_PDEATHSIG`); its pid is still the program's own.
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: ChildInput = .null,
        output: ChildOutput = .null, parentDeathSignal: String? = nil
    ) throws(ProcessError) -> ChildProcess {
        let (executable, arguments) =
            parentDeathSignal.map { ("/usr/bin/setpriv", ["--pdeathsig=\($0)", "--", executable] + arguments) } ?? (executable, arguments)
        let pid = try spawnRaw(executable, arguments, environment: environment) { actions in
            switch input {
            case .null:
                posix_spawn_file_actions_addopen(actions, 0, "/dev/null", O_RDONLY, 0)
            case .descriptor(let descriptor):
                posix_spawn_file_actions_adddup2(actions, descriptor, 0)
            }
            switch output {
            case .null:
                posix_spawn_file_actions_addopen(actions, 1, "/dev/null", O_WRONLY, 0)
            case .file(let path):
                posix_spawn_file_actions_addopen(actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o640)
            case .inherited:
                return
            }
            posix_spawn_file_actions_adddup2(actions, 1, 2)
        }
        return ChildProcess(pid: pid, command: commandLine(executable, arguments))
    }

    /// Sends `signal` unless the process has already been reaped.
    public func send(_ signal: Int32) {
        termination.withLock { termination in
            if termination == nil { _ = kill(pid, signal) }
        }
    }

    /// Reaps the process if it has ended; nil while it runs.
    @discardableResult
    public func poll() -> Termination? {
        termination.withLock { termination in
            if let termination { return termination }
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                termination = Termination(waitStatus: status)
            } else if result < 0 && errno == ECHILD {
                // Reaped by someone else: it is gone, its status unknown.
                termination = .exited(code: -1)
            }
            return termination
        }
    }

    public var isRunning: Bool { poll() == nil }

    /// Calls `handler` once, on a thread of its own, soon after the process ends (or at once
    /// if it has been reaped already). The process is not reaped by this: `poll` still finds
    /// its termination. For a supervisor that acts when its child dies without polling it.
    public func onExit(_ handler: @escaping @Sendable () -> Void) {
        let pid = self.pid
        let thread = Thread {
            var info = siginfo_t()
            // WNOWAIT: wait for the end, leave the status to be reaped by `poll`. EINTR retries;
            // ECHILD (reaped already) is an end too.
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
            handler()
        }
        thread.stackSize = 64 << 10
        thread.name = "exit of \(pid)"
        thread.start()
    }

    /// Waits until the process ends or `timeout` passes; returns its termination or nil.
    public func wait(timeout: Duration) async -> Termination? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if let done = poll() { return done }
            if clock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Sends `signal`, waits up to `grace`, then sends SIGKILL and waits for the end.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, grace: Duration = .seconds(10)) async -> Termination {
        send(signal)
        if let done = await wait(timeout: grace) { return done }
        send(SIGKILL)
        while true {
            if let done = await wait(timeout: .seconds(5)) { return done }
        }
    }
}

extension Termination {
    init(waitStatus status: Int32) {
        let signal = status & 0x7f
        if signal == 0 {
            self = .exited(code: (status >> 8) & 0xff)
        } else {
            self = .signaled(signal: signal)
        }
    }
}

/// The output and termination of a command that ran to its end.
public struct CommandResult: Sendable {
    public var termination: Termination
    /// Standard output and error, interleaved as the command wrote them.
    public var output: String
}

/// Runs a command to completion, capturing its standard output and error together.
///
/// A command still running after `timeout` is killed and reported as `.timedOut`. With
/// `check`, a non-zero exit throws `.failed` carrying the output's tail. `onOutput` sees each
/// chunk of output as it arrives (for progress reports).
@discardableResult
public func runCommand(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
    timeout: Duration = .seconds(120), check: Bool = true, onOutput: ((String) -> Void)? = nil
) throws(ProcessError) -> CommandResult {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else {
        throw .spawnFailed(command: commandLine(executable, arguments), message: String(cString: strerror(errno)))
    }
    // Neither end may leak into other children spawned concurrently.
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    let (readEnd, writeEnd) = (fds[0], fds[1])
    let command = commandLine(executable, arguments)
    let pid: pid_t
    do {
        pid = try spawnRaw(executable, arguments, environment: environment) { actions in
            posix_spawn_file_actions_addopen(actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(actions, writeEnd, 1)
            posix_spawn_file_actions_adddup2(actions, writeEnd, 2)
        }
    } catch {
        close(readEnd)
        close(writeEnd)
        throw error
    }
    close(writeEnd)
    defer { close(readEnd) }

    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    var timedOut = false
    while true {
        let remaining = deadline - clock.now
        if remaining <= .zero {
            timedOut = true
            kill(pid, SIGKILL)
            break
        }
        var pfd = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        let millis = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
        let ready = Glibc.poll(&pfd, 1, millis)
        if ready < 0 && errno == EINTR { continue }
        if ready <= 0 { continue }
        let count = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        output.append(contentsOf: buffer[0..<count])
        onOutput?(String(decoding: buffer[0..<count], as: UTF8.self))
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let text = String(decoding: output, as: UTF8.self)
    if timedOut {
        throw .timedOut(command: command, seconds: timeout.seconds, outputTail: tail(text))
    }
    let termination = Termination(waitStatus: status)
    if check && termination != .exited(code: 0) {
        throw .failed(command: command, termination: termination, outputTail: tail(text))
    }
    return CommandResult(termination: termination, output: text)
}

/// The last lines of a command's output, for error messages.
public func tail(_ text: String, lines: Int = 8) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines).joined(separator: "\n")
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

private func commandLine(_ executable: String, _ arguments: [String]) -> String {
    ([executable] + arguments).joined(separator: " ")
}

/// Starts a child from the `SpawnThread`, so that a parent-death signal it asks for follows
/// this process's life, not the calling thread's.
private func spawnRaw(
    _ executable: String, _ arguments: [String], environment: [String: String]?,
    fileActions configure: (UnsafeMutablePointer<posix_spawn_file_actions_t>) -> Void
) throws(ProcessError) -> pid_t {
    try SpawnThread.shared.run { () throws(ProcessError) -> pid_t in
        try spawnOnThisThread(executable, arguments, environment: environment, fileActions: configure)
    }
}

private func spawnOnThisThread(
    _ executable: String, _ arguments: [String], environment: [String: String]?,
    fileActions configure: (UnsafeMutablePointer<posix_spawn_file_actions_t>) -> Void
) throws(ProcessError) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    configure(&actions)
    // A child gets its input and outputs, nothing else of ours: NIO's sockets are not
    // close-on-exec, and postgres (and its backends) held a manager's witness connections
    // open after the manager died, the witnesses streaming into them until the stall timeout.
    _ = pgquorum_spawn_add_close_from(&actions, 3)

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Children start with default signal handling, whatever the parent ignores or blocks.
    var defaultSignals = sigset_t()
    sigfillset(&defaultSignals)
    posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

    let argv = ([executable] + arguments).map { strdup($0) }
    defer { argv.forEach { free($0) } }
    var environmentStrings: [UnsafeMutablePointer<CChar>?] = []
    if let environment {
        environmentStrings = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") }
    }
    defer { environmentStrings.forEach { free($0) } }

    var pid: pid_t = 0
    let code = (argv + [nil]).withUnsafeBufferPointer { argvPointer in
        if environment != nil {
            return (environmentStrings + [nil]).withUnsafeBufferPointer { envPointer in
                posix_spawn(&pid, executable, &actions, &attributes, argvPointer.baseAddress!, envPointer.baseAddress!)
            }
        }
        return posix_spawn(&pid, executable, &actions, &attributes, argvPointer.baseAddress!, environ)
    }
    guard code == 0 else {
        throw .spawnFailed(command: commandLine(executable, arguments), message: String(cString: strerror(code)))
    }
    return pid
}
