package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Bounds on an IP list: lists come from the config file and from the
// control API, and are checked on every publish and play request.
const (
	// MaxListEntries is the most entries one list may hold.
	MaxListEntries = 256
	// maxEntryLen bounds one entry ("ffff:...:ffff/128" is 43 bytes).
	maxEntryLen = 64
)

// ErrDenied marks a refusal by an IP list (errors.Is).
var ErrDenied = errors.New("address denied")

// DeniedError says why an address was refused by an IP list.
type DeniedError struct {
	Remote netip.Addr
	Reason string
}

func (e *DeniedError) Error() string { return fmt.Sprintf("%s %s", e.Remote, e.Reason) }

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// IPList is a parsed list of CIDR prefixes. The zero value is empty.
type IPList struct {
	prefixes []netip.Prefix
}

// ParseIPList parses entries, each a CIDR prefix ("10.0.0.0/8",
// "2001:db8::/32") or a single address ("192.0.2.7"). IPv4-mapped IPv6
// entries are taken as IPv4. It refuses more than MaxListEntries entries,
// and names the first bad entry.
func ParseIPList(entries []string) (IPList, error) {
	if len(entries) > MaxListEntries {
		return IPList{}, fmt.Errorf("ip list: %d entries, at most %d", len(entries), MaxListEntries)
	}
	l := IPList{prefixes: make([]netip.Prefix, 0, len(entries))}
	for i, e := range entries {
		p, err := parseEntry(e)
		if err != nil {
			return IPList{}, fmt.Errorf("ip list entry %d: %w", i, err)
		}
		l.prefixes = append(l.prefixes, p)
	}
	return l, nil
}

func parseEntry(e string) (netip.Prefix, error) {
	e = strings.TrimSpace(e)
	if e == "" {
		return netip.Prefix{}, errors.New("empty")
	}
	if len(e) > maxEntryLen {
		return netip.Prefix{}, fmt.Errorf("%d bytes long, at most %d", len(e), maxEntryLen)
	}
	if !strings.Contains(e, "/") {
		a, err := netip.ParseAddr(e)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix", e)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(e)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix", e)
	}
	if a := p.Addr(); a.Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix needs at least 96 bits", e)
		}
		p = netip.PrefixFrom(a.Unmap(), bits)
	}
	return p.Masked(), nil
}

// Len returns the number of entries.
func (l IPList) Len() int { return len(l.prefixes) }

// Match returns the first entry that contains ip.
func (l IPList) Match(ip netip.Addr) (netip.Prefix, bool) {
	ip = ip.Unmap()
	for _, p := range l.prefixes {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Rules is an allow and a deny list. Deny wins over allow; an empty allow
// list allows every address that is not denied.
type Rules struct {
	Allow, Deny IPList
}

// ParseRules parses an allow and a deny list.
func ParseRules(allow, deny []string) (Rules, error) {
	a, err := ParseIPList(allow)
	if err != nil {
		return Rules{}, fmt.Errorf("allow: %w", err)
	}
	d, err := ParseIPList(deny)
	if err != nil {
		return Rules{}, fmt.Errorf("deny: %w", err)
	}
	return Rules{Allow: a, Deny: d}, nil
}

// Empty reports whether the rules let every address through.
func (r Rules) Empty() bool { return r.Allow.Len() == 0 && r.Deny.Len() == 0 }

// Check returns nil when ip may pass, else a *DeniedError; what names
// whose lists these are in the reason ("listener rtmp publish").
func (r Rules) Check(ip netip.Addr, what string) error {
	if r.Empty() {
		return nil
	}
	ip = ip.Unmap()
	if p, ok := r.Deny.Match(ip); ok {
		return &DeniedError{Remote: ip, Reason: fmt.Sprintf("is on the %s deny list (%s)", what, p)}
	}
	if r.Allow.Len() > 0 {
		if _, ok := r.Allow.Match(ip); !ok {
			return &DeniedError{Remote: ip, Reason: fmt.Sprintf("is not on the %s allow list", what)}
		}
	}
	return nil
}

// AccessConfig is the YAML form of a listener's IP lists.
type AccessConfig struct {
	// PublishAllow, if not empty, lists the only addresses that may publish.
	PublishAllow []string `yaml:"publish_allow"`
	// PublishDeny lists addresses that may not publish (wins over allow).
	PublishDeny []string `yaml:"publish_deny"`
	// PlayAllow, if not empty, lists the only addresses that may play.
	PlayAllow []string `yaml:"play_allow"`
	// PlayDeny lists addresses that may not play (wins over allow).
	PlayDeny []string `yaml:"play_deny"`
}

// Access is a parsed AccessConfig. A nil *Access allows everything.
type Access struct {
	name          string
	publish, play Rules
}

// ParseAccess parses c; name says whose lists they are in refusals
// ("listener rtmp", "stream live/cam").
func ParseAccess(name string, c AccessConfig) (*Access, error) {
	pub, err := ParseRules(c.PublishAllow, c.PublishDeny)
	if err != nil {
		return nil, fmt.Errorf("%s publish %w", name, err)
	}
	play, err := ParseRules(c.PlayAllow, c.PlayDeny)
	if err != nil {
		return nil, fmt.Errorf("%s play %w", name, err)
	}
	return &Access{name: name, publish: pub, play: play}, nil
}

// CheckPublish returns nil when ip may publish, else a *DeniedError.
func (a *Access) CheckPublish(ip netip.Addr) error {
	if a == nil {
		return nil
	}
	return a.publish.Check(ip, a.name+" publish")
}

// CheckPlay returns nil when ip may play, else a *DeniedError.
func (a *Access) CheckPlay(ip netip.Addr) error {
	if a == nil {
		return nil
	}
	return a.play.Check(ip, a.name+" play")
}
