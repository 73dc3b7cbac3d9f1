import Foundation

/// A scenario file (after etcd-raft's datadriven tests): blocks of comment lines, one command,
/// a line `----`, and the output the command must produce, ending at a blank line.
public struct ScenarioScript {
    public struct Block {
        public var comments: [String]
        public var command: String
        public var expected: String
        /// The command's line number, for failure messages.
        public var line: Int
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public var blocks: [Block]

    public init(parsing text: String) throws {
        blocks = []
        var comments: [String] = []
        let lines = text.components(separatedBy: "\n")
        var position = 0
        while position < lines.count {
            let line = lines[position]
            position += 1
            if line.hasPrefix("#") {
                comments.append(line)
                continue
            }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let commandLine = position
            guard position < lines.count, lines[position] == "----" else {
                throw ParseError(description: "line \(commandLine): command \"\(line)\" is not followed by ----")
            }
            position += 1
            var output: [String] = []
            while position < lines.count, !lines[position].isEmpty {
                output.append(lines[position])
                position += 1
            }
            blocks.append(Block(comments: comments, command: line, expected: output.joined(separator: "\n"), line: commandLine))
            comments = []
        }
    }

    /// The scenario files (`*.txt`) in `folder`, sorted.
    public static func files(in folder: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".txt") }.sorted()
    }

    /// Runs every block through `run` and returns (block, actual output) pairs. When the
    /// environment variable `rewriteVariable` is "1", writes the actual outputs back to `path`.
    public static func run(
        path: String, rewriteVariable: String, _ run: (String) -> String
    ) throws -> [(block: Block, actual: String)] {
        let script = try ScenarioScript(parsing: try String(contentsOfFile: path, encoding: .utf8))
        var results: [(block: Block, actual: String)] = []
        for block in script.blocks {
            results.append((block, run(block.command)))
        }
        if ProcessInfo.processInfo.environment[rewriteVariable] == "1" {
            let text = results.map { ($0.block.comments + [$0.block.command, "----", $0.actual]).joined(separator: "\n") + "\n" }
            try text.joined(separator: "\n").write(toFile: path, atomically: false, encoding: .utf8)
        }
        return results
    }
}
