import Dispatch
import Foundation

/// SIGTERM and SIGINT as events: each is turned into `event(signalName)` on the stream of
/// whoever listens, instead of ending the process. Cancel the returned sources when done.
func forwardStopSignals<Event: Sendable>(
    to sink: AsyncStream<Event>.Continuation, _ event: @escaping @Sendable (String) -> Event
) -> [any DispatchSourceSignal] {
    [SIGTERM, SIGINT].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { sink.yield(event(number == SIGTERM ? "SIGTERM" : "SIGINT")) }
        source.resume()
        return source
    }
}
