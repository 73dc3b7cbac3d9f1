import Foundation

func fileExists(_ path: String) -> Bool {
    FileManager.default.fileExists(atPath: path)
}

/// Whether `path` is a folder with something in it.
func isNonEmptyDirectory(_ path: String) -> Bool {
    guard let contents = try? FileManager.default.contentsOfDirectory(atPath: path) else { return false }
    return !contents.isEmpty
}

func readFile(_ path: String) throws(NodeControlError) -> String {
    do {
        return try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw .fileOperationFailed(operation: "read", path: path, message: error.localizedDescription)
    }
}

extension PostgresNode {
    /// Writes `contents` to `path` atomically (temporary file, then rename), with `mode`,
    /// owned by the server user.
    func writeFile(_ path: String, _ contents: String, mode: Int) throws(NodeControlError) {
        let temporary = path + ".pgquorum-tmp"
        do {
            try Data(contents.utf8).write(to: URL(fileURLWithPath: temporary))
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: temporary)
            try installation.handOver(temporary)
            if rename(temporary, path) != 0 {
                throw NodeControlError.fileOperationFailed(operation: "rename into place", path: path, message: String(cString: strerror(errno)))
            }
        } catch let error as NodeControlError {
            throw error
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw .fileOperationFailed(operation: "write", path: path, message: String(describing: error))
        }
    }

    /// Creates a folder (and its parents) with `mode`, owned by the server user.
    func makeDirectory(_ path: String, mode: Int) throws(NodeControlError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: mode])
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            try installation.handOver(path)
        } catch let error as InstallationError {
            throw .fileOperationFailed(operation: "hand over", path: path, message: String(describing: error))
        } catch {
            throw .fileOperationFailed(operation: "create folder", path: path, message: error.localizedDescription)
        }
    }

    func removeItem(_ path: String) throws(NodeControlError) {
        guard fileExists(path) else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw .fileOperationFailed(operation: "remove", path: path, message: error.localizedDescription)
        }
    }

    func moveItem(_ source: String, to destination: String) throws(NodeControlError) {
        guard rename(source, destination) == 0 else {
            throw .fileOperationFailed(operation: "move \(source) to", path: destination, message: String(cString: strerror(errno)))
        }
    }

    /// Runs a server program as the server user; its failure becomes `operation` failed.
    @discardableResult
    func runServerProgram(
        _ program: String, _ arguments: [String], operation: String, timeout: Duration = .seconds(120),
        onOutput: ((String) -> Void)? = nil
    ) throws(NodeControlError) -> CommandResult {
        let command: (executable: String, arguments: [String])
        do {
            command = try installation.command(program, arguments)
        } catch {
            throw .commandFailed(operation: operation, error: .spawnFailed(command: program, message: String(describing: error)))
        }
        do {
            return try runCommand(command.executable, command.arguments, environment: serverProgramEnvironment, timeout: timeout, onOutput: onOutput)
        } catch {
            throw .commandFailed(operation: operation, error: error)
        }
    }

    /// A minimal, predictable environment: no PG* variables from the caller leak in.
    var serverProgramEnvironment: [String: String] {
        ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PGPASSFILE": passfilePath]
    }
}
