package origin

import (
	"fmt"
	"slices"
)

// StreamPolicy is what the outputs of one stream should be. The wiring
// computes it from the registry (and the transcode profiles) and pushes
// it with Hub.SetStreamPolicy at start and on every change; origin never
// calls back to ask. A stream without a policy plays clear, on the auto
// feed policy, without alias or renditions.
type StreamPolicy struct {
	// Feed is the feed policy: PolicyAuto ("" too), PolicyMain or
	// PolicyBackup.
	Feed string
	// Encrypted turns the encrypted outputs on: HTTP-FLV and RTMP in the
	// FLV scheme, HLS (mpegts) with SAMPLE-AES. It covers the play alias
	// and the variants too. A change applies at the next keyframe.
	Encrypted bool
	// PlayAlias names the stream, in the same app, that players of this
	// one get instead (the watermarked NAME_source); "" for none.
	PlayAlias string
	// Variants are the renditions offered in the stream's ABR playlist
	// (mpegts HLS only).
	Variants []Variant
	// Refuse, when set, says why this unit does not serve the stream's
	// players (another unit does: a move_unit plan). HTTP-FLV and HLS
	// requests get 503 with this reason and RTMP play is refused, for the
	// stream, its alias and its renditions alike, so that edges fail over
	// to the serving unit; players already attached are disconnected.
	// Publishers stay connected, so the unit stays hot.
	Refuse string
}

// children returns the streams that play under p (its alias and its
// variants' streams).
func (p StreamPolicy) children() []string {
	var out []string
	if p.PlayAlias != "" {
		out = append(out, p.PlayAlias)
	}
	for _, v := range p.Variants {
		out = append(out, v.Stream)
	}
	return out
}

func (p StreamPolicy) validate() error {
	if !ValidPolicy(p.Feed) {
		return fmt.Errorf("feed policy %q: want auto, main or backup", p.Feed)
	}
	if len(p.Refuse) > 200 {
		return fmt.Errorf("refusal reason of %d bytes: at most 200", len(p.Refuse))
	}
	if p.PlayAlias != "" && !validName(p.PlayAlias) {
		return fmt.Errorf("play alias %q: not a stream name", p.PlayAlias)
	}
	for _, v := range p.Variants {
		if v.Name == SourceVariant || !validName(v.Name) || !validName(v.Stream) {
			return fmt.Errorf("variant %q (stream %q): not a variant name", v.Name, v.Stream)
		}
	}
	return nil
}

// SetStreamPolicy sets the policy of app/name. It applies at once to the
// live stream and to its live alias and renditions (feed policy now,
// encryption at the next keyframe), and is kept for when they go live.
func (h *Hub) SetStreamPolicy(app, name string, p StreamPolicy) error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("stream policy of %s: %w", streamKey(app, name), err)
	}
	p.Variants = slices.Clone(p.Variants)
	h.setPolicy(app, name, &p)
	return nil
}

// DeleteStreamPolicy forgets the policy of app/name (a stream deleted
// from the registry): it plays with the defaults.
func (h *Hub) DeleteStreamPolicy(app, name string) { h.setPolicy(app, name, nil) }

func (h *Hub) setPolicy(app, name string, p *StreamPolicy) {
	key := streamKey(app, name)
	h.mu.Lock()
	affected := []string{name}
	if old, ok := h.policies[key]; ok {
		for _, c := range old.children() {
			delete(h.parents, streamKey(app, c))
			affected = append(affected, c)
		}
	}
	if p == nil {
		delete(h.policies, key)
	} else {
		h.policies[key] = *p
		for _, c := range p.children() {
			h.parents[streamKey(app, c)] = name
			affected = append(affected, c)
		}
	}
	var live []*entry
	for _, n := range affected {
		if e := h.streams[streamKey(app, n)]; e != nil && !slices.Contains(live, e) {
			live = append(live, e)
		}
	}
	feed, refuse := "", ""
	if p != nil {
		feed, refuse = p.Feed, p.Refuse
	}
	h.mu.Unlock()
	for _, e := range live {
		if e.name == name {
			e.sw.setPolicy(feed)
		}
		h.applyEncryption(e)
		if refuse != "" {
			h.dropPlayers(e, refuse)
		}
	}
}

// refusedLocked returns why players of app/name are refused here (its
// own policy's Refuse, else its parent's for an alias or rendition); ""
// when they are served (h.mu held).
func (h *Hub) refusedLocked(app, name string) string {
	if r := h.policies[streamKey(app, name)].Refuse; r != "" {
		return r
	}
	if parent, ok := h.parents[streamKey(app, name)]; ok {
		return h.policies[streamKey(app, parent)].Refuse
	}
	return ""
}

// refused is refusedLocked for callers without h.mu.
func (h *Hub) refused(app, name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refusedLocked(app, name)
}

// dropPlayers disconnects the players (never the internal readers) of
// e's clear and encrypted outputs: they reconnect, through their edge, to
// the unit that serves the stream.
func (h *Hub) dropPlayers(e *entry, reason string) {
	h.mu.Lock()
	outs := []*Stream{e.stream}
	if e.crypt != nil {
		outs = append(outs, e.crypt.out)
	}
	h.mu.Unlock()
	n := 0
	for _, s := range outs {
		s.mu.Lock()
		for i := len(s.readers) - 1; i >= 0; i-- {
			if r := s.readers[i]; r.role != roleInternal {
				s.drop(r, "not served here: "+reason)
				n++
			}
		}
		s.mu.Unlock()
	}
	if n > 0 {
		e.log.Info("players disconnected: stream not served by this unit", "players", n, "reason", reason)
	}
}

// policyLocked returns the policy of app/name (h.mu held).
func (h *Hub) policyLocked(app, name string) StreamPolicy {
	return h.policies[streamKey(app, name)]
}

// encryptedLocked reports whether app/name is to be encrypted: by its own
// policy or, for an alias or rendition, by its parent's (h.mu held).
func (h *Hub) encryptedLocked(app, name string) bool {
	if h.policies[streamKey(app, name)].Encrypted {
		return true
	}
	if parent, ok := h.parents[streamKey(app, name)]; ok {
		return h.policies[streamKey(app, parent)].Encrypted
	}
	return false
}

// encrypted is encryptedLocked for callers without h.mu.
func (h *Hub) encrypted(app, name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.encryptedLocked(app, name)
}

// playName is the stream players of app/name get: its play alias, else
// name.
func (h *Hub) playName(app, name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a := h.policyLocked(app, name).PlayAlias; a != "" {
		return a
	}
	return name
}

// variants returns the renditions of app/name offered in ABR HLS (none
// when the HLS output is not mpegts).
func (h *Hub) variants(app, name string) []Variant {
	if h.cfg.HLSVariant != HLSMPEGTS {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.policyLocked(app, name).Variants // never modified in place
}

// applyEncryption brings e's outputs to its encryption policy: the FLV
// output is started when needed, and both outputs are told the state.
func (h *Hub) applyEncryption(e *entry) {
	h.mu.Lock()
	on := h.encryptedLocked(e.app, e.name)
	if h.streams[streamKey(e.app, e.name)] != e {
		h.mu.Unlock()
		return // ended
	}
	c := e.crypt
	if c == nil && on {
		c = h.startCryptLocked(e, on)
	}
	h.mu.Unlock()
	if c != nil {
		c.setEncrypted(on)
	}
	if e.ts != nil && e.keys != nil {
		e.ts.pk.setEncrypted(on)
	}
}

// startCryptLocked starts e's encrypted FLV output (h.mu held); nil when
// the hub has no key source.
func (h *Hub) startCryptLocked(e *entry, on bool) *cryptFLV {
	if e.keys == nil {
		return nil
	}
	c, err := newCryptFLV(h.cfg, h.log, e.log, e.stream, e.keys, on)
	if err != nil {
		e.log.Error("encrypted output not started", "err", err)
		return nil
	}
	e.crypt = c
	return c
}
