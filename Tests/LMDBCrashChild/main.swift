// The child of the LMDB crash test: appends batches of entries to an LMDBRaftStorage in a
// loop, and after each `persist` returns prints the batch's last index on its own line. The
// test kills it with SIGKILL at random moments and checks every printed index survived.
//
//   lmdb-crash-child DIRECTORY SEED
import EventLog
import Foundation
import Raft

/// The entry the crash test expects at `index`: its bytes depend only on the index.
func expectedEntry(_ index: UInt64) -> Entry {
    let data = Array("entry-\(index)-".utf8) + [UInt8](repeating: UInt8(index % 251), count: Int(index % 64))
    return Entry(term: 1 + index / 1000, index: index, data: data)
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let seed = UInt64(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: lmdb-crash-child DIRECTORY SEED\n".utf8))
    exit(64)
}
do {
    let storage = try LMDBRaftStorage(directory: arguments[1])
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
} catch {
    FileHandle.standardError.write(Data("lmdb-crash-child: \(error)\n".utf8))
    exit(1)
}
