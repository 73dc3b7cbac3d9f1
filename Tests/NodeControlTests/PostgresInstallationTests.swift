import Foundation
import Testing
import TestSupport

@testable import NodeControl

@Suite("finding the PostgreSQL server programs")
struct PostgresInstallationTests {
    /// A folder with a stand-in `postgres` that says it is version `version`.
    func fakeBinaries(in folder: TemporaryDirectory, _ name: String, version: String = "15.18") throws -> String {
        let path = try folder.makeDirectory(name)
        try writeExecutable("#!/bin/sh\necho 'postgres (PostgreSQL) \(version)'\n", to: path + "/postgres")
        return path
    }

    @Test("--pg-bindir first, then pg_config --bindir of $PG_CONFIG or of the PATH's pg_config, then the PATH's postgres, then the packaged folder")
    func order() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-bindir")
        defer { folder.remove() }
        let given = try fakeBinaries(in: folder, "given")
        let configured = try fakeBinaries(in: folder, "configured")
        let onPath = try fakeBinaries(in: folder, "onpath")
        let pgConfig = folder.appending("pg_config")
        try writeExecutable("#!/bin/sh\necho \(configured)\n", to: pgConfig)

        func locate(_ bindir: String?, _ environment: [String: String]) throws -> String {
            try PostgresInstallation.locate(binDirectory: bindir, environment: environment).binDirectory
        }
        #expect(try locate(given, ["PG_CONFIG": pgConfig, "PATH": onPath]) == given)
        #expect(try locate(nil, ["PG_CONFIG": pgConfig, "PATH": onPath]) == configured)
        #expect(try locate(nil, ["PATH": onPath]) == onPath)
        // This platform's pg_config (libpq-dev) names the packaged server's folder.
        #expect(try locate(nil, ["PATH": "/usr/bin:/bin"]) == PostgresInstallation.packagedBinDirectory)
        #expect(try locate(nil, ["PATH": folder.appending("nowhere")]) == PostgresInstallation.packagedBinDirectory)
        #expect(throws: InstallationError.binaryMissing(path: folder.path + "/postgres")) { try locate(folder.path, [:]) }
    }

    @Test("the major version comes from postgres --version and must be the data directory's")
    func versions() throws {
        #expect(PostgresInstallation.majorVersion(of: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n") == 15)
        #expect(PostgresInstallation.majorVersion(of: "postgres (PostgreSQL) 17beta2\n") == 17)
        #expect(PostgresInstallation.majorVersion(of: "bash: postgres: not found") == nil)
        #expect(try PostgresInstallation().majorVersion() == 15)

        let folder = try TemporaryDirectory(prefix: "pgquorum-pgversion")
        defer { folder.remove() }
        let installation = PostgresInstallation(binDirectory: try fakeBinaries(in: folder, "bin", version: "15.4"))
        let data = try folder.makeDirectory("data")
        try installation.checkDataDirectory(data)  // not made yet
        try "15\n".write(toFile: data + "/PG_VERSION", atomically: true, encoding: .utf8)
        try installation.checkDataDirectory(data)
        try "14\n".write(toFile: data + "/PG_VERSION", atomically: true, encoding: .utf8)
        #expect(throws: InstallationError.versionMismatch(dataDirectory: data, data: 14, binaries: 15, binDirectory: installation.binDirectory)) {
            try installation.checkDataDirectory(data)
        }
        #expect(
            "\(InstallationError.versionMismatch(dataDirectory: data, data: 14, binaries: 15, binDirectory: installation.binDirectory))"
                == "the data directory \(data) was made by PostgreSQL 14, but the programs in \(installation.binDirectory) are PostgreSQL 15: point --pg-bindir at PostgreSQL 14's programs (or upgrade the data with pg_upgrade first)")
    }
}
