import Foundation
import Testing
import TestSupport

@testable import NodeControl

/// The watchdog process (issue 15): it kills postgres when the manager stops renewing the lease.
@Suite("the watchdog", .serialized)
struct WatchdogTests {
    /// A stand-in for a postmaster: a shell with two children, all sleeping.
    func target() async throws -> (ChildProcess, [pid_t]) {
        let process = try ChildProcess.spawn("/bin/sh", ["-c", "sleep 300 & sleep 300 & wait"])
        var children: [pid_t] = []
        for _ in 0..<100 where children.count < 2 {
            try await Task.sleep(for: .milliseconds(20))
            children = Watchdog.childProcesses(of: process.pid)
        }
        #expect(children.count == 2)
        return (process, children)
    }

    func watchdog() throws -> Watchdog {
        Watchdog(executable: try BuiltProducts.path(of: "pgquorum-test-helper"), arguments: ["watchdog"])
    }

    func alive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        // A zombie (Z) is dead, only not reaped yet.
        return !stat[stat.index(after: close)...].hasPrefix(" Z")
    }

    @Test("armed and not renewed, it kills the process and every child at the deadline, not before")
    func killsAtDeadline() async throws {
        let (process, children) = try await target()
        let watchdog = try watchdog()
        defer { Task { await watchdog.close() } }
        // The deadline counts from when the watchdog reads the command: first let it start
        // (a loaded machine may take seconds to start a process) and read what it was sent.
        try watchdog.arm(postmaster: process.pid, remaining: .seconds(60))
        try watchdog.disarm()
        try await waitUntil("the watchdog reads its commands", timeout: .seconds(30)) { watchdog.unreadBytes() == 0 }
        let armedAt = ContinuousClock.now
        try watchdog.arm(postmaster: process.pid, remaining: .seconds(2))
        try await Task.sleep(for: .milliseconds(500))
        // (On a loaded machine the sleep may overrun; the deadline is far enough.)
        #expect(process.isRunning || ContinuousClock.now - armedAt >= .seconds(2), "killed before its deadline")
        // Watched from a thread of its own: the test process's task pool may be busy.
        let (ended, after) = try await onOwnThread { () -> (Termination?, Duration) in
            while process.poll() == nil && ContinuousClock.now - armedAt < .seconds(15) { Thread.sleep(forTimeInterval: 0.01) }
            return (process.poll(), ContinuousClock.now - armedAt)
        }
        #expect(ended == .signaled(signal: SIGKILL))
        // Not before the deadline; soon after it, even on a loaded machine.
        #expect(after >= .milliseconds(1_950) && after < .seconds(6), "killed after \(after)")
        try await waitUntil("the children are killed too", timeout: .seconds(2)) { children.allSatisfy { !alive($0) } }
    }

    @Test("renewed in time it never kills; disarmed it never kills")
    func renewedAndDisarmed() async throws {
        let (process, children) = try await target()
        defer {
            process.send(SIGKILL)
            for child in children { kill(child, SIGKILL) }
        }
        let watchdog = try watchdog()
        defer { Task { await watchdog.close() } }
        // Renewed from a thread of its own (the test process's task pool may be busy with
        // other suites), each time with 3 s left, for 2 s; the longest pause between renewals
        // is measured: the property holds only if the renewals really came in time.
        let pid = process.pid
        let longestPause = try await onOwnThread { () throws -> Duration in
            var last = ContinuousClock.now
            var longest = Duration.zero
            let end = last + .seconds(2)
            while ContinuousClock.now < end {
                try watchdog.arm(postmaster: pid, remaining: .seconds(3))
                let now = ContinuousClock.now
                longest = max(longest, now - last)
                last = now
                Thread.sleep(forTimeInterval: 0.05)
            }
            try watchdog.disarm()
            return longest
        }
        try await Task.sleep(for: .milliseconds(1_500))
        try #require(longestPause < .seconds(3), "the machine stalled the renewals for \(longestPause)")
        #expect(process.isRunning)
        #expect(children.allSatisfy(alive))
    }

    @Test("when the manager is gone (its pipe closes) while armed, it kills at once; a new watchdog starts on the next arm")
    func managerGone() async throws {
        let (process, _) = try await target()
        let watchdog = try watchdog()
        defer { Task { await watchdog.close() } }
        try watchdog.arm(postmaster: process.pid, remaining: .seconds(60))
        let first = try #require(watchdog.pid)
        watchdog.abandon()
        let ended = await process.wait(timeout: .seconds(5))
        #expect(ended == .signaled(signal: SIGKILL))
        // The next arm starts a new watchdog process.
        let (second, children) = try await target()
        defer {
            second.send(SIGKILL)
            for child in children { kill(child, SIGKILL) }
        }
        try await waitUntil("the first watchdog exits", timeout: .seconds(5)) { !alive(first) }
        try watchdog.arm(postmaster: second.pid, remaining: .seconds(60))
        #expect(watchdog.pid != nil && watchdog.pid != first)
        try watchdog.disarm()
    }

    @Test("commands: arm PID MILLISECONDS and disarm; anything else is unreadable")
    func commands() {
        #expect(Watchdog.apply("arm 1234 1500", now: 10)!! == (1234, 1510))
        #expect(Watchdog.apply("disarm", now: 10)! == nil)
        for line in ["arm 1 100", "arm 0 100", "arm -5 100", "arm 12 x", "arm 12", "disarm now", "", "kill 12"] {
            #expect(Watchdog.apply(Substring(line), now: 0) == nil, "\(line)")
        }
    }
}
