import Foundation
import Testing
import TestSupport

@testable import NodeControl

@Suite("libpq connection against a real PostgreSQL 15")
struct PostgresConnectionTests {
    @Test("a query with parameters runs on a postgres the test started and stopped")
    func queryWithParameters() async throws {
        let server = try await PostgresFixture()
        do {
            try await server.start()
            let connection = try PostgresConnection(server.connectionOptions())
            let sum = try connection.scalar("SELECT $1::int + $2::int", ["40", "2"])
            #expect(sum == "42")

            // A parameter is never interpolated into the SQL text.
            let quoted = try connection.scalar("SELECT $1::text", ["'; DROP TABLE x; --"])
            #expect(quoted == "'; DROP TABLE x; --")

            try connection.query("CREATE TABLE t (id int PRIMARY KEY, note text)")
            let insert = try connection.query("INSERT INTO t VALUES ($1, $2), ($3, $4)", ["1", "one", "2", nil])
            #expect(insert.affectedRows == 2)
            let rows = try connection.query("SELECT id, note FROM t ORDER BY id")
            #expect(rows == PostgresResult(columns: ["id", "note"], rows: [["1", "one"], ["2", nil]], affectedRows: 2))
            #expect(rows.value(1, "id") == "2")
            #expect(try connection.scalar("SHOW server_version_num").map { $0.hasPrefix("15") } == true)

            let error = #expect(throws: PostgresError.self) { try connection.query("SELEC 1") }
            #expect(error?.sqlState == "42601")
            #expect(error?.description.contains("syntax error") == true)
            // The connection is still usable after a failed statement.
            #expect(try connection.scalar("SELECT 1") == "1")

            // Several statements in one round trip: every result, in order (an observation).
            let results = try connection.queries(["SELECT 1 AS a", "SELECT id FROM t ORDER BY id", "SELECT note FROM t WHERE id = 3"])
            #expect(results.map(\.rows) == [[["1"]], [["1"], ["2"]], []])
            // One that fails fails them all, with its reason, and the connection goes on.
            let failed = #expect(throws: PostgresError.self) { try connection.queries(["SELECT 1", "SELECT 1/0", "SELECT 2"]) }
            #expect(failed?.sqlState == "22012")
            #expect(try connection.queries(["SELECT 3"]).map(\.rows) == [[["3"]]])
            connection.close()
            #expect(!connection.isOpen)

            let pid = server.process?.pid
            let ended = await server.stop()
            #expect(ended == .exited(code: 0))
            if let pid { #expect(kill(pid, 0) != 0) }
        } catch {
            await server.destroy()
            throw error
        }
        await server.destroy()
    }

    @Test("a refused connection names the target and never prints the password")
    func refusedConnectionHidesPassword() throws {
        let port = try FreePort.next()
        var options = PostgresConnectionOptions(
            host: "127.0.0.1", port: port, user: "alice", database: "app", password: "hunter2-secret")
        options.connectTimeoutSeconds = 1
        let error = #expect(throws: PostgresError.self) { try PostgresConnection(options) }
        let text = error?.description ?? ""
        #expect(text.hasPrefix("could not connect to PostgreSQL at host=127.0.0.1 port=\(port) user=alice dbname=app password=********: "))
        #expect(text.contains("Connection refused"))
        #expect(!text.contains("hunter2-secret"))
        #expect(!String(describing: options).contains("hunter2-secret"))
    }

    @Test("a password echoed in a server message is redacted")
    func redaction() {
        let options = PostgresConnectionOptions(host: "h", port: 1, user: "u", database: "d", password: "pw!")
        #expect(options.redact("password pw! rejected; pw!") == "password ******** rejected; ********")
    }

    @Test("settings travel in libpq options with spaces escaped")
    func settingsEscaped() {
        var options = PostgresConnectionOptions(host: "h", port: 5432, user: "u", database: "d")
        options.settings = ["statement_timeout": "5s", "application_name": "a b"]
        let pairs = Dictionary(uniqueKeysWithValues: options.keywordValues())
        #expect(pairs["options"] == #"-c application_name=a\ b -c statement_timeout=5s"#)
        #expect(pairs["password"] == nil)
    }
}

@Suite("blocking work on threads of its own")
struct BlockingThreadsTests {
    @Test("every call gets a thread at once (two calls that wait for each other both end), and threads are reused, not made per call")
    func threadsAreReusedNeverShared() async throws {
        // Each waits for the other to start: with one thread between them, neither would end.
        let first = DispatchSemaphore(value: 0)
        let second = DispatchSemaphore(value: 0)
        async let a: Bool = blocking {
            first.signal()
            return second.wait(timeout: .now() + 10) == .success
        }
        async let b: Bool = blocking {
            second.signal()
            return first.wait(timeout: .now() + 10) == .success
        }
        #expect(await (a, b) == (true, true))
        // Calls one after the other run on threads kept from before: no new one each time
        // (Linux never gives a new thread the id of one that just ended; other tests' calls
        // running meanwhile may take a kept thread now and then).
        var threads: Set<String> = []
        for _ in 0..<40 {
            // "PID/task/TID"
            threads.insert(await blocking { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? "" })
        }
        #expect(threads.count <= 10, "40 calls ran on \(threads.count) threads")
    }
}
