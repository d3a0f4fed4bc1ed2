package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/livefuse/livefuse/cdnmix"
	"github.com/livefuse/livefuse/encryption"
	"github.com/livefuse/livefuse/lms"
)

// planMedia is what the emergency plans (lms.Plans) act on and verify
// outside the control plane: the CDN mixer of this node here, and the
// media listeners of every unit through lms.PlanProbe.
type planMedia struct {
	*lms.PlanProbe
	cm *cdnMix
}

func (p *planMedia) VendorKnown(vendor string) bool {
	for _, v := range p.cm.m.Allocator().Vendors() {
		if v.Name == vendor {
			return true
		}
	}
	return false
}

// matches reports whether bucket b is in region × isp ("" matches any).
func matches(b cdnmix.Bucket, region, isp string) bool {
	return (region == "" || b.Region == region) && (isp == "" || b.ISP == isp)
}

func (p *planMedia) VendorUsers(vendor, region, isp string) int {
	n := 0
	for k, ob := range p.cm.m.Aggregator().Snapshot() {
		if k.Vendor == vendor && matches(k.Bucket, region, isp) {
			n += ob.Users
		}
	}
	return n
}

// Blacklist writes the entry to the blacklist collection (every node
// applies it from its watch) and applies it here at once.
func (p *planMedia) Blacklist(ctx context.Context, vendor, region, isp, reason string) error {
	e := cdnmix.BlacklistEntry{Vendor: vendor, Region: region, ISP: isp, Reason: reason}
	if _, err := p.cm.blacklist.Update(ctx, cdnmix.BlacklistName(vendor, region, isp),
		func(*cdnmix.BlacklistEntry) (*cdnmix.BlacklistEntry, error) { return &e, nil }); err != nil {
		return fmt.Errorf("cdn blacklist: %w", err)
	}
	p.cm.m.SyncBlacklist()
	return nil
}

// Dispatches looks at the plan the dispatcher answers from: the bucket a
// client of region × isp falls in, and every bucket of the plan inside
// region × isp.
func (p *planMedia) Dispatches(vendor, region, isp string) bool {
	plan := p.cm.m.Allocator().Plan()
	if plan == nil {
		return false
	}
	live := func(bp *cdnmix.BucketPlan) bool {
		if bp == nil {
			return false
		}
		for _, c := range bp.Live() {
			if c.Vendor == vendor && c.Ratio > 0 {
				return true
			}
		}
		return false
	}
	if live(plan.Lookup(cdnmix.Bucket{Region: region, ISP: isp})) {
		return true
	}
	for _, b := range plan.Buckets() {
		if matches(b, region, isp) {
			if bp, _ := plan.Bucket(b); live(bp) {
				return true
			}
		}
	}
	return false
}

// flvSignal decodes an FLV onEncryption tag for the plan verifier.
func flvSignal(data []byte) (signal, encrypted bool, err error) {
	if !encryption.IsSignal(data) {
		return false, false, nil
	}
	s, err := encryption.ParseSignal(data)
	if err != nil {
		return true, false, err
	}
	return true, s.Encrypted, nil
}

// mountPlans adds the emergency plans to the control API; unconfirmed
// runs expire until ctx ends.
func mountPlans(ctx context.Context, cfg lms.PlansConfig, srv *lms.Server, reg *lms.Registry, st *lms.Store, cm *cdnMix, mediaTLS bool, log *slog.Logger) *lms.Plans {
	p := lms.NewPlans(cfg, reg, st, &planMedia{lms.NewPlanProbe(reg, st, mediaTLS, flvSignal), cm}, log)
	p.Mount(srv)
	go p.Run(ctx)
	return p
}
