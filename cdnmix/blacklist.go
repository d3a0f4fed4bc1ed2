package cdnmix

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// BlacklistEntry keeps a vendor out of a region × ISP until a time. An
// empty Region or ISP matches every region or ISP; a zero Until lasts until
// the entry is removed.
type BlacklistEntry struct {
	Vendor string    `json:"vendor" yaml:"vendor"`
	Region string    `json:"region,omitempty" yaml:"region,omitempty"`
	ISP    string    `json:"isp,omitempty" yaml:"isp,omitempty"`
	Until  time.Time `json:"until" yaml:"until"`
	Reason string    `json:"reason,omitempty" yaml:"reason,omitempty"`
}

func (e BlacklistEntry) key() Key { return Key{e.Vendor, Bucket{e.Region, e.ISP}} }

func (e BlacklistEntry) active(now time.Time) bool {
	return e.Until.IsZero() || now.Before(e.Until)
}

// matches reports whether e excludes vendor from bucket b. An entry for a
// region does not match the bucket of clients whose region is unknown.
func (e BlacklistEntry) matches(vendor string, b Bucket) bool {
	return e.Vendor == vendor &&
		(e.Region == "" || e.Region == b.Region) &&
		(e.ISP == "" || e.ISP == b.ISP)
}

// Blacklist is a set of entries keyed by vendor × region × ISP. It is safe
// for concurrent use. The zero value is ready to use.
type Blacklist struct {
	mu sync.Mutex
	m  map[Key]BlacklistEntry
}

// Add inserts e, replacing an entry with the same vendor, region and ISP.
func (b *Blacklist) Add(e BlacklistEntry) error {
	if e.Vendor == "" {
		return errors.New("blacklist: vendor is required")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[Key]BlacklistEntry)
	}
	b.m[e.key()] = e
	return nil
}

// Replace swaps every entry for es (the last of entries with the same
// vendor, region and ISP wins). It changes nothing when an entry has no
// vendor.
func (b *Blacklist) Replace(es []BlacklistEntry) error {
	m := make(map[Key]BlacklistEntry, len(es))
	for _, e := range es {
		if e.Vendor == "" {
			return errors.New("blacklist: vendor is required")
		}
		m[e.key()] = e
	}
	b.mu.Lock()
	b.m = m
	b.mu.Unlock()
	return nil
}

// Remove deletes the entry for exactly vendor, region and ISP and reports
// whether there was one.
func (b *Blacklist) Remove(vendor, region, isp string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := Key{vendor, Bucket{region, isp}}
	_, ok := b.m[k]
	delete(b.m, k)
	return ok
}

// Expire drops entries that ended at or before now and returns how many.
func (b *Blacklist) Expire(now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k, e := range b.m {
		if !e.active(now) {
			delete(b.m, k)
			n++
		}
	}
	return n
}

// List returns the entries active at now, sorted by vendor, region, ISP.
func (b *Blacklist) List(now time.Time) []BlacklistEntry {
	b.mu.Lock()
	out := make([]BlacklistEntry, 0, len(b.m))
	for _, e := range b.m {
		if e.active(now) {
			out = append(out, e)
		}
	}
	b.mu.Unlock()
	sortEntries(out)
	return out
}

// sortEntries sorts es by vendor, region, ISP (and, for the same key, by
// Until, for a stable order).
func sortEntries(es []BlacklistEntry) {
	slices.SortFunc(es, func(x, y BlacklistEntry) int {
		return cmp.Or(cmp.Compare(x.Vendor, y.Vendor), cmp.Compare(x.Region, y.Region), cmp.Compare(x.ISP, y.ISP),
			x.Until.Compare(y.Until))
	})
}

// Blocked reports whether an entry active at now excludes vendor from b.
func (b *Blacklist) Blocked(vendor string, bk Bucket, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.m {
		if e.active(now) && e.matches(vendor, bk) {
			return true
		}
	}
	return false
}

// StallRuleConfig configures the automatic stall rule: when one vendor ×
// region × ISP has a stall rate above Threshold for Minutes consecutive
// minutes, raise an [Alert] and, if Blacklist is set, blacklist it for TTL.
type StallRuleConfig struct {
	Threshold float64       `yaml:"threshold" json:"threshold"` // e.g. 0.1
	Minutes   int           `yaml:"minutes" json:"minutes"`     // default 3
	MinUsers  int           `yaml:"min_users" json:"min_users"` // ignore smaller samples; default 20
	Blacklist bool          `yaml:"blacklist" json:"blacklist"` // default false: alert only
	TTL       time.Duration `yaml:"ttl" json:"ttl"`             // blacklist duration; default 10m
	OnAlert   func(Alert)   `yaml:"-" json:"-"`                 // default: log a warning
}

// Alert is raised by the stall rule.
type Alert struct {
	Vendor, Region, ISP string
	StallRate           float64
	Users               int
	Minutes             int
	At                  time.Time
	Blacklisted         bool
}

func (a Alert) String() string {
	return fmt.Sprintf("vendor %s in %s: stall rate %.1f%% over %d users for %d min",
		a.Vendor, Bucket{a.Region, a.ISP}, 100*a.StallRate, a.Users, a.Minutes)
}

// stallRule tracks consecutive bad minutes per key. It evaluates at most
// once per wall-clock minute; a gap of more than a minute between
// evaluations restarts every streak.
type stallRule struct {
	cfg     StallRuleConfig
	last    time.Time // minute of the last evaluation
	streaks map[Key]int
}

func newStallRule(cfg StallRuleConfig) (*stallRule, error) {
	if cfg.Threshold <= 0 || cfg.Threshold >= 1 {
		return nil, fmt.Errorf("stall rule: threshold %g must be in (0, 1)", cfg.Threshold)
	}
	if cfg.Minutes < 0 || cfg.MinUsers < 0 || cfg.TTL < 0 {
		return nil, errors.New("stall rule: minutes, min_users and ttl must not be negative")
	}
	if cfg.Minutes == 0 {
		cfg.Minutes = 3
	}
	if cfg.MinUsers == 0 {
		cfg.MinUsers = 20
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Minute
	}
	return &stallRule{cfg: cfg, streaks: make(map[Key]int)}, nil
}

// check evaluates obs for the minute of now and returns the alerts whose
// streak just reached the configured length.
func (r *stallRule) check(now time.Time, obs map[Key]Observation) []Alert {
	minute := now.Truncate(time.Minute)
	if !r.last.IsZero() && !minute.After(r.last) {
		return nil
	}
	if !r.last.IsZero() && minute.Sub(r.last) > time.Minute {
		clear(r.streaks)
	}
	r.last = minute
	var alerts []Alert
	for k := range r.streaks {
		if ob, ok := obs[k]; !ok || !r.bad(ob) {
			delete(r.streaks, k)
		}
	}
	for k, ob := range obs {
		if !r.bad(ob) {
			continue
		}
		r.streaks[k]++
		if r.streaks[k] == r.cfg.Minutes {
			alerts = append(alerts, Alert{
				Vendor: k.Vendor, Region: k.Bucket.Region, ISP: k.Bucket.ISP,
				StallRate: ob.StallRate, Users: ob.Users, Minutes: r.cfg.Minutes,
				At: now, Blacklisted: r.cfg.Blacklist,
			})
		}
	}
	slices.SortFunc(alerts, func(x, y Alert) int {
		return cmp.Or(cmp.Compare(x.Vendor, y.Vendor), cmp.Compare(x.Region, y.Region), cmp.Compare(x.ISP, y.ISP))
	})
	return alerts
}

func (r *stallRule) bad(ob Observation) bool {
	return ob.Users >= r.cfg.MinUsers && ob.StallRate > r.cfg.Threshold
}
