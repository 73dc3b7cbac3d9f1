// pgquorum-test-helper: child processes that tests start and kill.
//
//   pgquorum-test-helper lmdb-append DIRECTORY SEED
//       Appends batches to an LMDBRaftStorage in a loop; after each persist returns, prints
//       the batch's last index on its own line (the LMDB crash test kills it with SIGKILL).
//   pgquorum-test-helper start-postgres DATA RUN PORT
//       Starts postgres in an initialised DATA through NodeControl, prints its pid, and waits
//       (the supervision test kills this process and expects postgres to die with it).
//   pgquorum-test-helper watchdog
//       The node manager's watchdog (`Watchdog.serve`) on standard input.
import EventLog
import Foundation
import NodeControl
import Raft

/// The entry the crash test expects at `index`: its bytes depend only on the index.
func expectedEntry(_ index: UInt64) -> Entry {
    let data = Array("entry-\(index)-".utf8) + [UInt8](repeating: UInt8(index % 251), count: Int(index % 64))
    return Entry(term: 1 + index / 1000, index: index, data: data)
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("pgquorum-test-helper: \(message)\n".utf8))
    exit(1)
}

func appendLoop(directory: String, seed: UInt64) throws -> Never {
    let storage = try LMDBRaftStorage(directory: directory)
    var generator = SeededGenerator(seed: seed)
    var last = try storage.lastIndex()
    while true {
        let count = 1 + Int(generator.next() % 50)
        let batch = (1...count).map { expectedEntry(last + UInt64($0)) }
        try storage.persist(hardState: HardState(term: batch.last!.term, vote: 1, commit: last), entries: batch, snapshot: nil)
        last = batch.last!.index
        FileHandle.standardOutput.write(Data("\(last)\n".utf8))
        if generator.next() % 20 == 0, last > 200 {
            try storage.compact(to: last - 150, membership: Membership(voters: [1]), data: Array("snapshot at \(last - 150)".utf8))
        }
    }
}

func startPostgres(data: String, run: String, port: Int) async throws -> Never {
    let node = try PostgresNode(PostgresNodeConfiguration(dataDirectory: data, runDirectory: run, port: port, applicationName: "helper"))
    try await node.start()
    FileHandle.standardOutput.write(Data("\(node.pid ?? 0)\n".utf8))
    while true { try await Task.sleep(for: .seconds(3600)) }
}

let arguments = Array(CommandLine.arguments.dropFirst())
do {
    switch arguments.first {
    case "lmdb-append":
        guard arguments.count == 3, let seed = UInt64(arguments[2]) else { fail("usage: lmdb-append DIRECTORY SEED") }
        try appendLoop(directory: arguments[1], seed: seed)
    case "watchdog":
        Watchdog.serve()
    case "start-postgres":
        guard arguments.count == 4, let port = Int(arguments[3]) else { fail("usage: start-postgres DATA RUN PORT") }
        try await startPostgres(data: arguments[1], run: arguments[2], port: port)
    default:
        fail("usage: pgquorum-test-helper lmdb-append DIRECTORY SEED | start-postgres DATA RUN PORT | watchdog")
    }
} catch {
    fail("\(error)")
}
