import EventLog
import Foundation
import Manager
import NodeControl
import Raft
import Testing
import TestSupport

/// Whole clusters across hosts (issue 14): one witness, one node manager and one postgres per
/// host of a network lab; the test process is the client host.
@Suite(
    "multi-host clusters", .serialized,
    .enabled(if: NetworkLab.unavailableReason == nil, Comment(rawValue: NetworkLab.unavailableReason ?? "")))
struct MultiHostTests: ClusterScenarios {
    @Test("nodes join one at a time from other hosts (one by host name); a writer on the client host loses nothing across a manager-crash failover and a switchover")
    func joinFailoverSwitchover() async throws {
        try await withNetworkLab(hostCount: 3) { lab in
            // Node 3 is registered by name and never a candidate: the test process (a host
            // without the lab's names) cannot reach a primary by that name.
            try await withPGCluster(nodeArguments: [3: ["--candidate-priority", "0"]], lab: lab, registeredByName: [3]) { cluster in
                // Every node admits every node, by address, for replication (and pg_rewind).
                let addresses = Set(lab.hosts.map { "\($0.address)" })
                for id in cluster.ids {
                    let admitted = try await onOwnThread {
                        try cluster.sql(on: id, "SELECT DISTINCT address FROM pg_hba_file_rules WHERE 'replication' = ANY(database)")
                    }
                    #expect(Set(admitted.compactMap { $0 }) == addresses, "pg_hba.conf of node \(id)")
                }
                let old = try #require(primary(try await cluster.clusterState()))
                #expect(old == 1)
                try await createTable(cluster)
                let writer = RowWriter(uri: try await cluster.uri())
                try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }

                await cluster.killManager(old)
                let failedOver = try await cluster.waitFor("node 2 becomes primary", timeout: .seconds(60)) { self.primary($0) == 2 }
                #expect(primary(failedOver) == 2)
                var before = writer.count
                try await waitUntil("the writer resumes on node 2", timeout: .seconds(30)) { writer.count >= before + 100 }
                try await expectAllAcknowledged(writer, on: 2, cluster)
                try cluster.startManager(old)
                _ = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(90))
                try await expectStandbyWithEveryAcknowledgedRow(old, writer, cluster)

                let result = try await cli(cluster, ["switchover", "--to", "\(old)"])
                #expect(result.termination == .exited(code: 0), "\(result.output)")
                before = writer.count
                try await waitUntil("the writer resumes", timeout: .seconds(30)) { writer.count >= before + 100 }
                await writer.stop()
                let state = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(60))
                #expect(primary(state) == old)
                try await expectAllAcknowledged(writer, on: old, cluster)
                for id in cluster.ids where id != old { try await expectStandbyWithEveryAcknowledgedRow(id, writer, cluster) }

                // Dropping node 3 takes its host's lines out of every other node's pg_hba.conf.
                let drop = try await cli(cluster, ["drop", "3"])
                #expect(drop.termination == .exited(code: 0), "\(drop.output)")
                let remaining = Set(cluster.ids.filter { $0 != 3 }.compactMap { cluster.host(of: $0).map { "\($0.address)" } })
                for id in cluster.ids where id != 3 {
                    try await waitUntilAsync("node \(id)'s pg_hba.conf no longer admits node 3", timeout: .seconds(30)) {
                        let admitted = try await onOwnThread {
                            try cluster.sql(on: id, "SELECT DISTINCT address FROM pg_hba_file_rules WHERE 'replication' = ANY(database)")
                        }
                        return Set(admitted.compactMap { $0 }) == remaining
                    }
                }
            }
        }
    }

    @Test("the primary's host cut off for 60 s: it stops taking writes within lease + 1 s, another node takes writes within 6.5 s, never two at once; after the heal the old primary is heard within 2 s and rejoins as a standby, every standby streaming within 15 s; nothing acknowledged lost but what a writer in its host cancelled (at most 3)")
    func primaryHostCut() async throws {
        try await withNetworkLab(hostCount: 3) { lab in
            try await withPGCluster(lab: lab) { cluster in
                let trial = try await cluster.partitionTrial(.primaryHost, duration: .seconds(60), healthyWithin: .seconds(60))
                print("primary host cut for 60 s: \(trial.summary)")
                // 4.5-4.9 s in the release bench, whichever host held the witness leader (a leader
                // change restarting the timers made it 6.5 s there); a debug build beside the
                // other suites took 4.7-5.5 s, so the test leaves a margin.
                try expectTakenOver(trial, within: .milliseconds(6_500))
                let heard = try #require(trial.heardAfterHeal)
                #expect(heard <= .seconds(2), "the old primary was heard \(heard) after the heal")
                let inRecovery = try await onOwnThread { try cluster.sql(on: trial.oldPrimary, "SELECT pg_is_in_recovery()") }
                #expect(inRecovery == ["t"], "the old primary is not a standby")
            }
        }
    }

    @Test("the primary's manager frozen (SIGSTOP) for 30 s on its lab host: its watchdog stops postgres within lease + 1 s, another node takes writes within 6 s, never two at once; after SIGCONT it rejoins, every standby streaming within 15 s; nothing acknowledged lost but what a writer in its host cancelled (at most 3)")
    func frozenPrimaryManager() async throws {
        try await withNetworkLab(hostCount: 3) { lab in
            try await withPGCluster(lab: lab) { cluster in
                let trial = try await cluster.partitionTrial(.frozenPrimaryManager, duration: .seconds(30), healthyWithin: .seconds(60))
                print("\(PartitionFault.frozenPrimaryManager): \(trial.summary)")
                // The unhealthy timeout after its last report, then a lease and the watchdog's
                // grace after the standbys stopped following: 4.5-5.0 s in the bench.
                try expectTakenOver(trial, within: .seconds(6))
            }
        }
    }

    /// A fault that takes the primary away: the old primary stops taking writes within lease +
    /// 1 s (the lease is 1.5 s), another node takes writes within `bound`, and the cluster is
    /// healthy and streaming within 15 s of the heal. Nothing the client host's writer or the
    /// plain writer in the primary's host had acknowledged is lost, and two nodes never take
    /// writes at once. The cancelling writer loses what it cancelled while the old primary was
    /// still writable (at most one commit a second: it cancels after 1 s), and the
    /// `synchronous_commit = local` one what it wrote then; both are printed, only the first
    /// is bounded.
    private func expectTakenOver(_ trial: PartitionTrial, within bound: Duration) throws {
        #expect(trial.lost.isEmpty, "acknowledged rows lost on the client host: \(trial.lost.prefix(10))")
        #expect(trial.inHost[.plain]?.lost.isEmpty == true, "acknowledged rows lost in the primary's host: \(trial.inHost[.plain]?.lost.prefix(10) ?? [])")
        let cancelled = trial.inHost[.cancelling]?.lost.count
        #expect(cancelled.map { $0 <= 3 } == true, "rows the cancelling writer had acknowledged lost: \(cancelled.map(String.init) ?? "not measured")")
        #expect(trial.twoWritable == 0, "\(trial.twoWritable) times two nodes may have taken writes at once")
        #expect(trial.newPrimary != nil && trial.newPrimary != trial.oldPrimary)
        let resumed = try #require(trial.newPrimaryWritableAfter, "no other node took writes")
        #expect(resumed <= bound, "another node took writes \(resumed) after the fault")
        let writableFor = try #require(trial.oldPrimaryWritableFor, "the old primary took writes for the whole fault")
        #expect(writableFor <= .milliseconds(2_500), "the old primary took writes for \(writableFor)")
        let healthy = try #require(trial.healthyAfterHeal)
        #expect(healthy <= .seconds(15), "healthy and streaming \(healthy) after the heal")
    }

    @Test(
        "a standby's host cut off for 30 s, its witness the Raft leader or a follower: writes go on within 5 s, no failover, never two primaries; after the heal it streams again within 15 s; nothing acknowledged lost",
        arguments: [PartitionFault.witnessLeaderHost, .standbyHost])
    func standbyHostCut(fault: PartitionFault) async throws {
        try await withNetworkLab(hostCount: 3) { lab in
            try await withPGCluster(lab: lab) { cluster in
                let trial = try await cluster.partitionTrial(fault, duration: .seconds(30), healthyWithin: .seconds(15))
                print("\(fault): \(trial.summary)")
                #expect(trial.faulted != trial.oldPrimary)
                #expect(trial.longestWriteGap < .seconds(5), "writes stopped for \(trial.longestWriteGap)")
                #expect(trial.newPrimary == trial.oldPrimary && trial.newPrimaryWritableAfter == nil, "a failover happened")
                #expect(trial.twoWritable == 0, "\(trial.twoWritable) times two nodes may have taken writes at once")
                expectNothingLost(trial)
            }
        }
    }

    @Test("the primary cut off from its standbys only, every host still reaching the witnesses: in availability mode the primary stops waiting for them and writes resume within 5 s, no failover; after the heal synchronous replication comes back within 15 s, nothing acknowledged lost")
    func primaryCutFromStandbys() async throws {
        try await withNetworkLab(hostCount: 3) { lab in
            try await withPGCluster(lab: lab) { cluster in
                let trial = try await cluster.partitionTrial(.replicationLinks, duration: .seconds(20), healthyWithin: .seconds(15))
                print("\(PartitionFault.replicationLinks): \(trial.summary)")
                // Once (of many runs, under the whole suite's load) writes stopped for the whole
                // cut here, with ten times fewer writes acknowledged: the logs say why, next time.
                #expect(trial.longestWriteGap < .seconds(5), "writes stopped for \(trial.longestWriteGap)\n\(cluster.logs())")
                #expect(trial.newPrimary == trial.oldPrimary && trial.newPrimaryWritableAfter == nil, "a failover happened")
                #expect(trial.twoWritable == 0, "\(trial.twoWritable) times two nodes may have taken writes at once")
                expectNothingLost(trial)
                #expect(try await cluster.clusterState()[trial.oldPrimary]?.reached == .primary, "synchronous replication did not come back")
            }
        }
    }

    /// Without a failover no writer loses anything, not even one that cancels or commits locally.
    private func expectNothingLost(_ trial: PartitionTrial) {
        #expect(trial.lost.isEmpty, "acknowledged rows lost on the client host: \(trial.lost.prefix(10))")
        for writer in PartitionTrial.InHostWriter.allCases {
            let lost = trial.inHost[writer]?.lost
            #expect(lost?.isEmpty == true, "acknowledged rows of the \(writer.rawValue) writer in the primary's host lost: \(lost.map { "\($0.prefix(10))" } ?? "not measured")")
        }
    }
}
