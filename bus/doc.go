// Package bus carries typed JSON events on named topics between livefuse
// nodes: player QoS beacons, CDN log lines, stream lifecycle and audit.
//
// Two implementations share the [Bus] interface: [Memory], the in-process
// bus of the embedded default, and [Kafka], over Kafka with kafka-go. Both
// keep one promise to producers: [Publisher.Publish] never blocks on the
// network. Kafka queues events in memory, spills them to disk while the
// broker is away and sends everything, oldest first, when it returns
// (at-least-once: an event may arrive twice, never zero times, as long as
// the spill directory survives and is not full).
//
// Events are JSON values; [Emit] publishes a typed [Event] on its topic,
// and [Decode] reads one back in a [Handler].
package bus
