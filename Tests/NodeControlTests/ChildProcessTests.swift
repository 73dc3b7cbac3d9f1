import Foundation
import Testing
import TestSupport

@testable import NodeControl

@Suite("child processes")
struct ChildProcessTests {
    @Test("runCommand captures standard output and error together")
    func capturesOutput() throws {
        let result = try runCommand("/bin/sh", ["-c", "echo out; echo err >&2"])
        #expect(result.termination == .exited(code: 0))
        #expect(result.output == "out\nerr\n")
    }

    @Test("a child inherits its input and outputs only, not the parent's other descriptors (sockets are not close-on-exec)")
    func noDescriptorLeaks() async throws {
        // A descriptor without close-on-exec, as NIO's sockets are.
        let leaky = open("/dev/null", O_RDONLY)
        #expect(leaky > 2)
        defer { close(leaky) }
        let captured = try runCommand("/bin/sh", ["-c", "ls /proc/$$/fd"])
        #expect(captured.output.split(separator: "\n") == ["0", "1", "2"], "\(captured.output)")
        // A supervised child (postgres, the watchdog) too.
        let folder = try TemporaryDirectory(prefix: "pgquorum-fds")
        let log = folder.appending("fds")
        let child = try ChildProcess.spawn("/bin/sh", ["-c", "ls /proc/$$/fd"], output: .file(path: log))
        _ = await child.wait(timeout: .seconds(10))
        let listed = try String(contentsOfFile: log, encoding: .utf8)
        #expect(listed.split(separator: "\n") == ["0", "1", "2"], "\(listed)")
    }

    @Test("a failing command throws with its exit code and output tail")
    func failureCarriesTail() {
        let error = #expect(throws: ProcessError.self) {
            try runCommand("/bin/sh", ["-c", "echo first; echo 'the reason' >&2; exit 3"])
        }
        #expect(error == .failed(command: "/bin/sh -c echo first; echo 'the reason' >&2; exit 3",
                                 termination: .exited(code: 3), outputTail: "first\nthe reason"))
    }

    @Test("a command past its timeout is killed, not waited for")
    func timeout() {
        let clock = ContinuousClock()
        let started = clock.now
        let error = #expect(throws: ProcessError.self) {
            try runCommand("/bin/sh", ["-c", "echo started; exec sleep 30"], timeout: .milliseconds(300))
        }
        #expect(error == .timedOut(command: "/bin/sh -c echo started; exec sleep 30", seconds: 0.3, outputTail: "started"))
        #expect(clock.now - started < .seconds(10))
    }

    @Test("a missing program gives a spawn error")
    func missingProgram() {
        let error = #expect(throws: ProcessError.self) { try runCommand("/nonexistent/program", []) }
        #expect(error == .spawnFailed(command: "/nonexistent/program", message: "No such file or directory"))
    }

    @Test("a spawned child is stopped by signal and reaped by pid")
    func stopBySignal() async throws {
        let child = try ChildProcess.spawn("/bin/sleep", ["30"])
        #expect(child.isRunning)
        let ended = await child.stop(signal: SIGTERM, grace: .seconds(5))
        #expect(ended == .signaled(signal: SIGTERM))
        #expect(!child.isRunning)
        #expect(kill(child.pid, 0) != 0)
    }

    @Test("a child with a parent-death signal outlives the short-lived thread that started it")
    func parentDeathSignalFollowsTheProcess() async throws {
        // The kernel signals when the thread that created the child exits; started from a
        // thread that ends once setpriv has set the signal up and run sleep, the child must
        // still run: only this process's end may kill it.
        let child = try await onOwnThread { () throws -> ChildProcess in
            let child = try ChildProcess.spawn("/bin/sleep", ["60"], parentDeathSignal: "KILL")
            let deadline = ContinuousClock.now + .seconds(10)
            while (try? String(contentsOfFile: "/proc/\(child.pid)/comm", encoding: .utf8)) != "sleep\n" && ContinuousClock.now < deadline {
                usleep(1_000)
            }
            return child
        }
        // The starting thread is gone by now; give the signal time to arrive if it were sent.
        try await Task.sleep(for: .milliseconds(500))
        #expect(child.poll() == nil, "the child ended: \(child.poll().map(String.init(describing:)) ?? "")")
        #expect(await child.stop(signal: SIGTERM, grace: .seconds(5)) == .signaled(signal: SIGTERM))
    }
}
