import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An operating-system account, looked up by name.
public struct OSUser: Sendable, Equatable {
    public var name: String
    public var uid: uid_t
    public var gid: gid_t

    /// Looks a user up in the password database; nil when there is no such user.
    public static func named(_ name: String) -> OSUser? {
        guard let entry = getpwnam(name) else { return nil }
        return OSUser(name: name, uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid)
    }

    /// True when this process runs as root, and so must not run postgres as itself.
    public static var isRoot: Bool { geteuid() == 0 }
}

/// An error with the PostgreSQL installation or its files.
public enum InstallationError: Error, Equatable, CustomStringConvertible {
    case binaryMissing(path: String)
    case userMissing(name: String)
    case fileOperationFailed(operation: String, path: String, message: String)
    /// No PostgreSQL server programs were found; what was tried, in order.
    case notFound(tried: [String])
    /// The server programs do not say which version they are.
    case unknownVersion(path: String, output: String)
    /// A data directory made by another major version than the programs'.
    case versionMismatch(dataDirectory: String, data: Int, binaries: Int, binDirectory: String)

    public var description: String {
        switch self {
        case .notFound(let tried):
            return "no PostgreSQL server programs found (tried \(tried.joined(separator: "; "))): pass --pg-bindir DIR, set PG_CONFIG, or install postgresql-15 (scripts/setup)"
        case .unknownVersion(let path, let output):
            return "\(path) --version did not say its version: \(output.prefix(200))"
        case .versionMismatch(let dataDirectory, let data, let binaries, let binDirectory):
            return "the data directory \(dataDirectory) was made by PostgreSQL \(data), but the programs in \(binDirectory) are PostgreSQL \(binaries): "
                + "point --pg-bindir at PostgreSQL \(data)'s programs (or upgrade the data with pg_upgrade first)"
        case .binaryMissing(let path):
            return "PostgreSQL program \(path) is missing; run scripts/setup to install postgresql-15"
        case .userMissing(let name):
            return "the OS user \(name) that runs postgres does not exist"
        case .fileOperationFailed(let operation, let path, let message):
            return "could not \(operation) \(path): \(message)"
        }
    }
}

/// Where the PostgreSQL server programs are, and as whom they run.
///
/// PostgreSQL refuses to run as root. When this process is root, every server program is
/// started through `setpriv`, which drops to `serverUser` and then execs the program without
/// forking, so the pid we hold is the program's own (for postgres, the postmaster).
public struct PostgresInstallation: Sendable {
    /// The folder with `postgres`, `initdb`, `pg_ctl`, `pg_basebackup`, `pg_rewind`.
    public var binDirectory: String
    /// The account that runs the server programs when this process is root.
    public var serverUserName: String

    public init(binDirectory: String = "/usr/lib/postgresql/15/bin", serverUserName: String = "postgres") {
        self.binDirectory = binDirectory
        self.serverUserName = serverUserName
    }

    /// The path of one server program, checked to exist.
    public func program(_ name: String) throws(InstallationError) -> String {
        let path = "\(binDirectory)/\(name)"
        guard access(path, X_OK) == 0 else { throw .binaryMissing(path: path) }
        return path
    }

    /// The user server programs run as: `serverUserName` when root, nil (this process's own
    /// user) otherwise.
    public func serverUser() throws(InstallationError) -> OSUser? {
        guard OSUser.isRoot else { return nil }
        guard let user = OSUser.named(serverUserName) else { throw .userMissing(name: serverUserName) }
        return user
    }

    /// The executable and arguments that run `program` with `arguments` as the server user.
    ///
    /// With `parentDeathSignal`, the program receives that signal when the thread that
    /// started it exits (Linux `PR_SET_PDEATHSIG`), so it does not outlive its manager.
    public func command(
        _ program: String, _ arguments: [String], parentDeathSignal: String? = nil
    ) throws(InstallationError) -> (executable: String, arguments: [String]) {
        let path = try self.program(program)
        let user = try serverUser()
        guard user != nil || parentDeathSignal != nil else { return (path, arguments) }
        var wrapper: [String] = []
        if let user {
            wrapper += ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups"]
        }
        if let parentDeathSignal {
            wrapper.append("--pdeathsig=\(parentDeathSignal)")
        }
        return ("/usr/bin/setpriv", wrapper + ["--", path] + arguments)
    }

    /// The folder where this platform's package puts PostgreSQL 15 (Debian, Ubuntu).
    public static let packagedBinDirectory = "/usr/lib/postgresql/15/bin"

    /// Finds the server programs: `binDirectory` when given; else `pg_config --bindir` of
    /// $PG_CONFIG, or of the `pg_config` on the PATH; else the folder of the `postgres` on the
    /// PATH; else the packaged folder. Each candidate must hold an executable `postgres`.
    public static func locate(binDirectory: String?, environment: [String: String]) throws(InstallationError) -> PostgresInstallation {
        func holdsPostgres(_ folder: String) -> Bool { access(folder + "/postgres", X_OK) == 0 }
        if let binDirectory {
            guard holdsPostgres(binDirectory) else { throw .binaryMissing(path: binDirectory + "/postgres") }
            return PostgresInstallation(binDirectory: binDirectory)
        }
        var tried: [String] = []
        let path = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        let pgConfigs = [environment["PG_CONFIG"].map { ("$PG_CONFIG", $0) }, path.map { $0 + "/pg_config" }.first { access($0, X_OK) == 0 }.map { ("pg_config on the PATH", $0) }]
        for case let (source, pgConfig)? in pgConfigs {
            guard let result = try? runCommand(pgConfig, ["--bindir"], timeout: .seconds(10)) else {
                tried.append("\(source) \(pgConfig): it did not run")
                continue
            }
            let folder = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
            if holdsPostgres(folder) { return PostgresInstallation(binDirectory: folder) }
            tried.append("\(source) \(pgConfig) --bindir: \(folder) holds no postgres")
        }
        if let folder = path.first(where: holdsPostgres) { return PostgresInstallation(binDirectory: folder) }
        tried.append("postgres on the PATH")
        if holdsPostgres(packagedBinDirectory) { return PostgresInstallation(binDirectory: packagedBinDirectory) }
        tried.append(packagedBinDirectory)
        throw .notFound(tried: tried)
    }

    /// The major version of the server programs, from `postgres --version`.
    public func majorVersion() throws(InstallationError) -> Int {
        let path = try program("postgres")
        let output = (try? runCommand(path, ["--version"], timeout: .seconds(10)))?.output ?? ""
        guard let version = Self.majorVersion(of: output) else { throw .unknownVersion(path: path, output: output) }
        return version
    }

    /// The major version in `postgres --version`'s answer: "postgres (PostgreSQL) 15.18 …" → 15.
    static func majorVersion(of output: String) -> Int? {
        guard let range = output.range(of: "(PostgreSQL) ") else { return nil }
        let number = output[range.upperBound...].prefix { $0.isNumber || $0 == "." }
        return number.split(separator: ".").first.flatMap { Int($0) }
    }

    /// Refuses a data directory made by another major version (its PG_VERSION); a missing
    /// or empty one (not made yet) passes.
    public func checkDataDirectory(_ dataDirectory: String) throws(InstallationError) {
        guard let text = try? String(contentsOfFile: dataDirectory + "/PG_VERSION", encoding: .utf8),
            let data = text.split(separator: ".").first.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        else { return }
        let binaries = try majorVersion()
        guard data == binaries else { throw .versionMismatch(dataDirectory: dataDirectory, data: data, binaries: binaries, binDirectory: binDirectory) }
    }

    /// Makes `path` belong to the server user (when root), so postgres may write there.
    public func handOver(_ path: String) throws(InstallationError) {
        guard let user = try serverUser() else { return }
        guard chown(path, user.uid, user.gid) == 0 else {
            throw .fileOperationFailed(operation: "chown to \(user.name)", path: path, message: String(cString: strerror(errno)))
        }
    }
}
