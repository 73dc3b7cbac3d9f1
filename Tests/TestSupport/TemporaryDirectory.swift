import Foundation

/// A folder under /tmp for one test, readable by other users (mode 755) so that a postgres
/// started as the postgres user can traverse it. `remove()` deletes it with its contents.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(prefix: String = "pgquorum-test", root: String = "/tmp") throws {
        var template = Array("\(root)/\(prefix)-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let created else {
            throw TestSupportError("mkdtemp under \(root) failed: \(String(cString: strerror(errno)))")
        }
        path = String(cString: created)
        chmod(path, 0o755)
    }

    /// A path inside the folder.
    public func appending(_ name: String) -> String { "\(path)/\(name)" }

    /// Creates a subfolder (mode 755) and returns its path.
    public func makeDirectory(_ name: String) throws -> String {
        let sub = appending(name)
        try FileManager.default.createDirectory(
            atPath: sub, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return sub
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A failure in a test fixture, with a sentence saying what went wrong.
public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
