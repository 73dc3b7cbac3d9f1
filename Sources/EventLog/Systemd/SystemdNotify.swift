#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// systemd's notification protocol (`sd_notify(3)`), without libsystemd: one datagram per
/// message to the socket named by `$NOTIFY_SOCKET`. A service with `Type=notify` is started
/// once it says `READY=1`; with `WatchdogSec=` it is killed and restarted when it does not
/// say `WATCHDOG=1` within that time (`$WATCHDOG_USEC`). Without `$NOTIFY_SOCKET` (not run by
/// systemd) every call does nothing.
public struct SystemdNotify: Sendable {
    let socketPath: String?
    /// How often systemd expects `WATCHDOG=1`; nil when no watchdog is asked for (or it is
    /// meant for another process: `$WATCHDOG_PID`).
    public let watchdogInterval: Duration?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        let forUs = environment["WATCHDOG_PID"].map { $0 == String(getpid()) } ?? true
        if forUs, let text = environment["WATCHDOG_USEC"], let micros = UInt64(text), micros > 0 {
            watchdogInterval = .microseconds(Int64(micros))
        } else {
            watchdogInterval = nil
        }
    }

    /// The service is up.
    public func ready() { send("READY=1\nSTATUS=running\n") }

    /// The service is alive: the watchdog's deadline starts again.
    public func watchdog() { if watchdogInterval != nil { send("WATCHDOG=1\n") } }

    public func stopping() { send("STOPPING=1\n") }

    /// Sends `message`; false when there is no socket or it could not be sent.
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard let socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        // An abstract socket ("@name") starts with a NUL byte.
        if path.first == UInt8(ascii: "@") { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.enumerated() { buffer[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), $0, length) }
        }
        return sent == bytes.count
    }
}
