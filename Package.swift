// swift-tools-version: 6.2
import PackageDescription

/// Every target of our own builds in Swift 6 language mode with warnings as errors.
let strict: [SwiftSetting] = [
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "pgquorum",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pgquorum", targets: ["pgquorum"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // System libraries, found through pkg-config (scripts/setup installs them).
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // glibc's posix_spawn extensions that Swift's Glibc module leaves out.
        .target(name: "CSpawn"),

        // The consensus algorithm as a pure state machine: no I/O, no clocks.
        .target(name: "Raft", swiftSettings: strict),

        // The event schema, its encoding, LMDB storage, the witness service and its client.
        .target(
            name: "EventLog",
            dependencies: [
                "Raft",
                "CLMDB",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),

        // PostgreSQL on one host: libpq, the postgres child process, replication operations.
        .target(
            name: "NodeControl",
            dependencies: [
                "CLibPQ",
                "CSpawn",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // The reducer, the policy and the node manager loop.
        .target(
            name: "Manager",
            dependencies: [
                "EventLog",
                "NodeControl",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),

        // The executable: a thin @main and one file per subcommand.
        .executableTarget(
            name: "pgquorum",
            dependencies: [
                "Manager",
                "EventLog",
                "NodeControl",
                "Raft",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),

        // Benchmarks: `swift run -c release pgquorum-bench --help` (figures in docs/BENCHMARKS.md).
        .executableTarget(
            name: "pgquorum-bench",
            dependencies: ["Raft", "EventLog", "Manager", "NodeControl", "TestSupport"],
            path: "Benchmarks/pgquorum-bench",
            swiftSettings: strict
        ),

        // Fixtures shared by the test targets: temporary folders, free ports, a real PostgreSQL.
        .target(
            name: "TestSupport",
            dependencies: ["NodeControl", "EventLog", "Raft", "Manager"],
            path: "Tests/TestSupport",
            swiftSettings: strict
        ),

        .testTarget(name: "RaftTests", dependencies: ["Raft", "TestSupport"], exclude: ["testdata"], swiftSettings: strict),
        // Child processes that tests start and kill (the LMDB crash test, postgres supervision).
        .executableTarget(
            name: "pgquorum-test-helper",
            dependencies: ["EventLog", "Raft", "NodeControl"],
            path: "Tests/TestHelper",
            swiftSettings: strict
        ),

        .testTarget(name: "EventLogTests", dependencies: ["EventLog", "Raft", "TestSupport", "pgquorum-test-helper", .product(name: "X509", package: "swift-certificates")], swiftSettings: strict),
        // Real witness processes on loopback (the `pgquorum` executable).
        .testTarget(
            name: "WitnessTests",
            dependencies: [
                "EventLog", "Raft", "TestSupport", "pgquorum", "NodeControl",
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),
        // Whole clusters: witnesses, node managers and postgres as real processes (issue 8).
        .testTarget(name: "ClusterTests", dependencies: ["Manager", "EventLog", "Raft", "NodeControl", "TestSupport", "pgquorum"], swiftSettings: strict),
        .testTarget(name: "NodeControlTests", dependencies: ["NodeControl", "EventLog", "TestSupport", "pgquorum-test-helper"], swiftSettings: strict),
        .testTarget(name: "ManagerTests", dependencies: ["Manager", "EventLog", "TestSupport"], exclude: ["testdata"], swiftSettings: strict),
        .testTarget(name: "pgquorumTests", dependencies: ["pgquorum", "Manager", "EventLog", "NodeControl", "TestSupport"], exclude: ["snapshots"], swiftSettings: strict),
    ]
)
