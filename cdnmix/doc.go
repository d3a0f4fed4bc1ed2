// Package cdnmix is the CDN mixer: it decides, request by request, which CDN
// vendor serves each player.
//
// The pieces, in the order data flows through them:
//
//   - [Vendor]: a CDN's pull URLs, URL signing, committed and ceiling
//     bandwidth (overall or per region) and coverage.
//   - [Locator]: client IP → country, region (province) and ISP, from a CIDR
//     CSV file ([CIDRLocator]) or a MaxMind DB ([MMDBLocator]).
//   - [Observer]: bandwidth and quality per vendor × region × ISP, filled by
//     the aggregator from CDN logs and player beacons; [Holt] forecasts load.
//   - [Allocator]: every few seconds scores each vendor in each region × ISP
//     bucket and turns the scores into damped dispatch ratios, published as
//     an immutable [Plan].
//   - [Dispatcher]: the public /dispatch/ handler; picks a vendor with smooth
//     weighted round-robin over the current plan and answers a 302 to a signed
//     URL or an HTTPDNS-style JSON candidate list.
//   - [Blacklist] and [StallRule]: manual and automatic exclusions.
//   - [Simulate]: replays a [Scenario] through the real allocator.
//
// cdnmix never imports media packages; what it needs from a node (does a
// stream exist?) comes in through plain functions in its configs.
package cdnmix
