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

    public var description: String {
        switch self {
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

    /// Makes `path` belong to the server user (when root), so postgres may write there.
    public func handOver(_ path: String) throws(InstallationError) {
        guard let user = try serverUser() else { return }
        guard chown(path, user.uid, user.gid) == 0 else {
            throw .fileOperationFailed(operation: "chown to \(user.name)", path: path, message: String(cString: strerror(errno)))
        }
    }
}
