// Package cdnmix is the CDN mixer: it decides, request by request, which CDN
// vendor serves each player.
//
// The pieces, in the order data flows through them:
//
//   - [Vendor]: a CDN's pull URLs, URL signing, committed and ceiling
//     bandwidth (overall or per region), coverage and an optional stats URL.
//   - [Locator]: client IP → country, region (province) and ISP, from a CIDR
//     CSV file ([CIDRLocator]) or a MaxMind DB ([MMDBLocator]).
//   - [QoSHandler]: POST /qos, where players post beacons, each with the
//     session token ([authkey.Session]) its dispatch answer gave it. Only
//     beacons with a valid token go on the bus (qos.beacons), stamped with
//     the server's time, under the token's session, vendor, region and
//     ISP, at a limited rate per session; the rest are counted by reason
//     and never steer.
//   - [Aggregator]: CDN log lines (cdn.logs, see [ParseAccessLog] for an
//     nginx shipper), polled vendor stats and beacons into per vendor ×
//     region × ISP [Observation]s over sliding windows: bandwidth, users,
//     stalls (2 s or more of empty buffer), first frame p50/p95, pull
//     success, a [Holt] forecast, and a per-minute history; one session
//     is one user. Its keys are bounded: a vendor must be configured, and
//     a region or ISP that is not configured (or in the CIDR database, or
//     named by a vendor) is folded into the any-value, so no input makes
//     a key, a plan bucket or a metric series. It is the allocator's
//     [Observer].
//   - In a fleet on Kafka the aggregation has two stages
//     ([AggregationConfig], roles stage_one and dispatch): [StageOne]
//     workers own the partitions of cdn.logs and qos.beacons (one
//     aggregator per partition) and publish each partition's additive
//     figures ([Partial]) to a compacted topic; every dispatcher node's
//     [FleetView] sums them into fleet-wide observations (its Observer)
//     and measures its share of the fleet's dispatch requests, which
//     sizes its admission.
//   - [Allocator]: every few seconds scores each vendor in each region × ISP
//     bucket and turns the scores into damped dispatch ratios, published as
//     an immutable [Plan]; with admission, each plan also caps what a pool
//     may take before the next one, so a wave cannot overshoot a ceiling.
//   - [Dispatcher]: the public /dispatch/ handler; picks a vendor with smooth
//     weighted round-robin over the current plan and answers a 302 to a signed
//     URL or an HTTPDNS-style JSON candidate list, opening a player session
//     whose token (qos_token) the player sends with its beacons.
//   - [Blacklist] and [StallRule]: manual and automatic exclusions.
//   - [Simulate]: replays a [Scenario] through the real allocator.
//   - [VendorStore] and [BlacklistStore]: where the vendors and the manual
//     blacklist live, shared by every node (the lms collections, one record
//     per vendor and per entry). The control API writes there by
//     compare-and-swap and applies what the store holds; each node applies
//     the others' changes from its watch ([Mixer.SyncVendors],
//     [Mixer.SyncBlacklist]).
//   - [Mixer]: all of the above assembled from one [Config] for a node, with
//     its control API routes ([Mixer.Mount]) and metrics.
//
// cdnmix never imports media packages; what it needs from a node (does a
// stream exist?) comes in through plain functions ([WithStreamExists]), and
// what it keeps in the lms store through the interfaces it declares.
package cdnmix
