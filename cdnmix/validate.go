package cdnmix

import (
	"errors"
	"fmt"
)

// Validate checks what New would refuse in c (the geo source, trusted
// proxies, the stall rule, the vendors) without opening anything, so that
// a bad config is refused before a node starts. Error messages start with
// the key at fault.
func (c Config) Validate() error {
	if c.Geo.CIDRFile != "" && c.Geo.MMDBFile != "" {
		return errors.New("geo: set cidr_file or mmdb_file, not both")
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return fmt.Errorf("trusted_proxies: %w", err)
	}
	if c.StatsInterval < 0 {
		return errors.New("stats_interval: must not be negative")
	}
	if c.StallRule.Threshold > 0 {
		if _, err := newStallRule(c.StallRule); err != nil {
			return fmt.Errorf("stall_rule: %w", err)
		}
	}
	if err := ValidateVendors(c.Vendors); err != nil {
		return fmt.Errorf("vendors: %w", err)
	}
	return nil
}
