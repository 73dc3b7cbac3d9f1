import ArgumentParser
import Foundation
import NodeControl

/// `pgquorum node logs`: postgres's own server log on a node's host.
struct NodeLogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print the PostgreSQL server log of a node on this host.",
        discussion: """
            postgres writes its log through its logging collector to DIR/data/log/, one file a \
            weekday (postgresql-Mon.log …), each emptied when its day comes round again: a week \
            of logs. This prints the end of the file it writes now; with --follow it goes on \
            printing what is added, into the next day's file too, until interrupted. What \
            postgres wrote before its logging collector ran (a start that failed early) is in \
            DIR/run/postgres.log. The manager's own log goes to its standard output (the \
            journal under systemd).
            """
    )

    @Option(help: ArgumentHelp("The node's folder, as given to `node create` (default: $PGQUORUM_NODE_DIR).", valueName: "dir"))
    var dir: String?

    @Option(name: [.customShort("n"), .long], help: "How many lines to print from the end.")
    var lines = 50

    @Flag(name: [.short, .long], help: "Keep printing what postgres adds.")
    var follow = false

    func validate() throws {
        guard lines >= 0 else { throw ValidationError("--lines must be 0 or more") }
    }

    func run() async throws {
        guard let folder = dir ?? ProcessInfo.processInfo.environment["PGQUORUM_NODE_DIR"], !folder.isEmpty else {
            throw CommandFailure("no node folder: pass --dir DIR or set PGQUORUM_NODE_DIR")
        }
        let dataDirectory = URL(fileURLWithPath: folder).standardizedFileURL.path + "/data"
        guard let file = ServerLog.currentFile(dataDirectory: dataDirectory) else {
            let early = URL(fileURLWithPath: folder).standardizedFileURL.path + "/run/postgres.log"
            throw CommandFailure(
                "no server log in \(dataDirectory)/log: postgres has not run with its logging collector there yet"
                    + (FileManager.default.fileExists(atPath: early) ? " (what it wrote before is in \(early))" : ""))
        }
        // Where following starts is fixed before the header says the file: a line written
        // once the header is out is never taken for one from before.
        var reader = try LogReader(path: file)
        FileHandle.standardError.write(Data("==> \(file) <==\n".utf8))
        emit(reader.lastLines(lines))
        guard follow else { return }
        var current = file
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(250))
            emit(reader.added())
            // The collector moved to the next day's file: finish this one, go on with that.
            if let next = ServerLog.currentFile(dataDirectory: dataDirectory), next != current {
                FileHandle.standardError.write(Data("==> \(next) <==\n".utf8))
                current = next
                reader = try LogReader(path: next, from: 0)
                emit(reader.added())
            }
        }
    }
}

/// Writes `text` to standard output at once (a pipe or file would buffer `print`).
private func emit(_ text: String) {
    guard !text.isEmpty else { return }
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Reads a log file's end, then what is appended to it.
private struct LogReader {
    let path: String
    private var offset: UInt64

    init(path: String, from offset: UInt64? = nil) throws {
        self.path = path
        guard FileManager.default.isReadableFile(atPath: path) else { throw CommandFailure("cannot read \(path) (run as the postgres user or root)") }
        self.offset = offset ?? Self.size(path)
    }

    static func size(_ path: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    /// The last `count` lines before the reading position (at most the file's last 4 MiB).
    func lastLines(_ count: Int) -> String {
        guard count > 0, let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let start = offset > 4 << 20 ? offset - (4 << 20) : 0
        try? handle.seek(toOffset: start)
        let data = (try? handle.read(upToCount: Int(offset - start))) ?? Data()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        let kept = lines.suffix(count)
        return kept.isEmpty ? "" : kept.joined(separator: "\n") + "\n"
    }

    /// What was appended since the last call (all of it again when the file was emptied).
    mutating func added() -> String {
        let size = Self.size(path)
        if size < offset { offset = 0 }
        guard size > offset, let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let data = (try? handle.read(upToCount: Int(size - offset))) ?? Data()
        offset += UInt64(data.count)
        return String(decoding: data, as: UTF8.self)
    }
}
